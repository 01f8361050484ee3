"""The training loop: any registered optimizer on any registered problem, resumable.

Per step the loop builds a ``ModelClosure`` for the mini-batch and calls ``optimizer.step`` (the
step protocol every entry shares). The hot path does no host-device synchronisation: mini-batch
losses stay on the device and are read back every ``check_every`` steps, when divergence,
progress and the time budget are checked. Training time is measured between device
synchronisations and excludes evaluations, which run on train_eval, valid and test at epoch
boundaries (or every ``eval_every`` steps) and at the end.

State is checkpointed at every evaluation and every ``checkpoint_every`` seconds: model,
optimizer, random state, data position and history. A run killed at any moment and started again
continues from its last checkpoint and ends with the same results as an uninterrupted run (on
the CPU; timings aside), because the data order and augmentation are pure functions of
(seed, epoch, batch index).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import load_splits, train_stream
from ..optim import ModelClosure, get_optimizer
from ..problems import Problem, get_problem, seeded_model
from ..results_schema import EVAL_SPLITS, SCHEMA_VERSION
from .context import DEFAULT_DATA_DIR, describe, run_context, synthetic_sizes
from .cost import CostModel, measure_cost
from .environment import environment, exact_float32
from .evaluation import evaluate_split
from .interrupt import RunInterrupted, deferred_interrupt
from .progress import Progress
from .spec import STALL_TOL, RunInputError, RunSpec, setting_folder
from .store import ResultStore


@dataclass
class Execution:
    """How a run executes (not part of its identity)."""

    device: torch.device
    data_dir: Path | None = None
    progress: bool = True
    checkpoint_every: float = 300.0
    """Wall-clock seconds between checkpoints inside an evaluation interval."""
    check_every: int = 25
    """Steps between read-backs of the mini-batch loss."""
    threads: int | None = None
    """torch threads while training (None: leave torch's setting)."""
    cg_check_every: int = 1
    """The HF optimizers' CG reads which blocks still run back to the host every this many
    iterations (1: every one). The same steps; up to k-1 more products per block and step,
    which the cost counters include. For GPUs, where each read waits for the device."""
    cg_compiled: bool = False
    """The HF optimizers' CG runs each iteration's vector work as one compiled function (the
    GPU path): the same steps to rounding, as a different thread count gives."""
    runs_at_once: int | None = 1
    """Runs sharing this machine by design (a pool's workers), recorded beside the seconds
    because another run's load slows this one; None where unknown (a Ray cluster)."""
    rerun_before: float | None = None
    """Redo finished runs whose result was written before this time (``time.time()``): what
    ``--rerun`` sets to the command's start; None reuses finished runs."""

    def optimizer_options(self) -> dict[str, Any]:
        """The execution switches an optimizer may take as constructor arguments (an entry
        passes on those it declares in ``execution_options``)."""
        return {"cg_check_every": self.cg_check_every, "cg_compiled": self.cg_compiled}


@dataclass
class TrainState:
    """Everything about a run in progress that is not model or optimizer state."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    train_seconds: float = 0.0
    forward_passes: float = 0.0
    backward_passes: float = 0.0
    block_products: list[float] = field(default_factory=list)
    full_products: float = 0
    minibatch_losses: list[float] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    target_reached: dict[str, Any] | None = None
    diverged_at: dict[str, Any] | None = None
    stopped_early: dict[str, Any] | None = None
    """``{"reason": "target" | "no_improvement", "step"}`` when an early stop ended the run."""


class _Timer:
    """Training time between device synchronisations."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._start: float | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self._sync()
        self._start = time.perf_counter()

    def stop(self) -> float:
        assert self._start is not None
        self._sync()
        elapsed = time.perf_counter() - self._start
        self._start = None
        return elapsed

    @property
    def running(self) -> bool:
        return self._start is not None

    def peek(self) -> float:
        """Seconds since start, without a synchronisation (for progress and budgets)."""
        return 0.0 if self._start is None else time.perf_counter() - self._start


def problem_data(
    problem: Problem,
    *,
    batch_size: int,
    source: str,
    data_dir: Path | None,
    device: torch.device,
    seed: int,
):
    """The problem's data splits on ``device`` (generated data sized by ``synthetic_sizes``)."""
    return load_splits(
        problem.dataset,
        data_dir=data_dir if data_dir is not None else DEFAULT_DATA_DIR,
        source=source,
        device=device,
        seed=seed,
        synthetic_sizes=synthetic_sizes(batch_size),
    )


class Trainer:
    """One run from its spec to its result dict."""

    def __init__(
        self,
        spec: RunSpec,
        store: ResultStore,
        execution: Execution,
        context: dict[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.store = store
        self.ex = execution
        self.context = context or run_context(spec, execution.device, execution.data_dir)
        self.problem: Problem = get_problem(spec.problem)
        self.entry = get_optimizer(spec.optimizer)
        self.hps = dict(spec.hyperparameters)
        """Resolved where the spec was made; ``entry.build`` refuses a setting that was not."""
        self.device = execution.device

    # -- set-up ------------------------------------------------------------------------------

    def _setup(self) -> None:
        spec, problem = self.spec, self.problem
        exact_float32(self.device)
        self.splits = problem_data(
            problem,
            batch_size=spec.batch_size,
            source=spec.data,
            data_dir=self.ex.data_dir,
            device=self.device,
            seed=spec.seed,
        )
        self.model = seeded_model(problem, spec.seed, self.device)
        self.model.train()
        try:
            self.optimizer = self.entry.build(self.model, self.hps, **self.ex.optimizer_options())
        except ValueError as exc:  # settings only the model can refuse (a block glob, a loss)
            raise RunInputError(f"{spec.optimizer} on {spec.problem}: {exc}") from None
        self.driver = self.entry.driver(self.optimizer)
        wd = problem.weight_decay if spec.weight_decay is None else spec.weight_decay
        self.l2 = problem.l2_coefficients(self.model, wd)
        if spec.batch_size > self.splits.sizes["train"]:
            raise RunInputError(
                f"batch size {spec.batch_size} is larger than the training split of "
                f"{spec.problem} ({self.splits.sizes['train']} examples); give a smaller one"
            )
        self.stream = train_stream(
            self.splits, spec.batch_size, seed=spec.seed, augment=problem.augment
        )
        self.steps_per_epoch = self.stream.batches_per_epoch
        torch.manual_seed(spec.seed)
        self.state = TrainState()
        # measured at initialisation, before any checkpoint is restored: a resumed run has
        # the cost model of the uninterrupted one
        try:
            self.cost = self._measure_cost()
        except ValueError as exc:  # a method that cannot take this problem (K-FAC on a VAE)
            raise RunInputError(f"{spec.optimizer} on {spec.problem}: {exc}") from None
        self.state.block_products = [0] * len(self.cost.block_products)
        checkpoint = self.store.load_checkpoint(spec)
        rerun = self.ex.rerun_before is not None
        if checkpoint is not None and rerun and checkpoint.get("context") != self.context:
            checkpoint = None  # made on other data or another device: --rerun starts again
        if checkpoint is not None:
            self._restore(checkpoint)

    def _closure(
        self, x: torch.Tensor, y: torch.Tensor, model: torch.nn.Module | None = None
    ) -> ModelClosure:
        """The step closure of a batch, for the run's model or (the cost probe) a copy."""
        inputs, targets = self.problem.prepare_batch(x, y)
        model = self.model if model is None else model
        return ModelClosure(model, self.problem.loss, inputs, targets, self.l2)

    def _measure_cost(self) -> CostModel:
        period = self.entry.period(self.hps)
        batches = []
        for x, y in self.stream.epoch(0):
            batches.append((x, y))
            if len(batches) == period:
                break
        return measure_cost(
            self.entry,
            self.hps,
            self.optimizer,
            self.model,
            lambda model, x, y: self._closure(x, y, model),
            batches,
            self.ex.optimizer_options(),
        )

    # -- checkpoints ---------------------------------------------------------------------------

    def _rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _checkpoint(self) -> None:
        self.store.save_checkpoint(
            self.spec,
            {
                "spec": self.spec.identity(),
                "context": self.context,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng": self._rng_state(),
                "state": asdict(self.state),
            },
        )
        self._last_checkpoint = time.monotonic()

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("spec") != self.spec.identity():
            raise RuntimeError(
                f"checkpoint of another run in {self.store.checkpoint_path(self.spec)}"
            )
        if checkpoint.get("context") != self.context:
            raise RuntimeError(
                f"the checkpoint {self.store.checkpoint_path(self.spec)} of this run was made "
                f"on {describe(checkpoint.get('context'))}, not {describe(self.context)}; "
                "--rerun starts the run again"
            )
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        torch.set_rng_state(checkpoint["rng"]["cpu"])
        if "cuda" in checkpoint["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], self.device)
        self.state = TrainState(**checkpoint["state"])

    # -- evaluation ----------------------------------------------------------------------------

    def _gradient_equivalents(self) -> float:
        s = self.state
        return self.cost.gradient_equivalents(
            s.forward_passes, s.backward_passes, s.block_products, s.full_products, s.step
        )

    def _evaluate(self) -> None:
        s, problem = self.state, self.problem
        self.driver.before_evaluation()
        record: dict[str, Any] = {
            "epoch": s.epoch + s.batch / self.steps_per_epoch,
            "step": s.step,
            "train_seconds": s.train_seconds,
            "forward_passes": s.forward_passes,
            "backward_passes": s.backward_passes,
            "curvature_products": sum(s.block_products) + s.full_products,
            "gradient_equivalents": self._gradient_equivalents(),
        }
        for key, split in EVAL_SPLITS:
            result = evaluate_split(
                self.model, problem, self.splits.split(split), self.l2, self.spec.batch_size
            )
            record[f"{key}_loss"] = result.loss
            record[f"{key}_accuracy"] = result.accuracy
        if not all(math.isfinite(record[f"{key}_loss"]) for key, _ in EVAL_SPLITS):
            # The parameters give a non-finite loss: the run diverged here.
            s.diverged_at = {"step": s.step, "epoch": record["epoch"]}
            return
        record["minibatch_loss"] = s.minibatch_losses[-1] if s.minibatch_losses else None
        record["optimizer"] = self.driver.summary()
        s.evaluations.append(record)
        target = problem.target
        if target is not None and s.target_reached is None:
            key = "train" if target.split == "train_eval" else target.split
            value = record[f"{key}_{target.metric}"]
            if value is not None and math.isfinite(value) and target.reached(value):
                s.target_reached = {
                    "step": s.step,
                    "epoch": record["epoch"],
                    "train_seconds": s.train_seconds,
                    "gradient_equivalents": record["gradient_equivalents"],
                    "value": value,
                }

    # -- training ------------------------------------------------------------------------------

    def _total_steps(self) -> int | None:
        b = self.spec.budget
        limits = [n for n in (b.steps, b.epochs and b.epochs * self.steps_per_epoch) if n]
        return min(limits) if limits else None

    def run(self) -> tuple[dict[str, Any], bool]:
        """Train to the budget (or divergence); the result dict and whether it diverged."""
        spec = self.spec
        progress = Progress(
            f"{spec.problem}/{spec.optimizer} seed {spec.seed}",
            None,
            spec.budget.seconds,
            enabled=self.ex.progress,
        )
        try:
            progress.begin("setting up (data, model, cost model)")
            self._setup()
            progress.end()
            if self.state.step:
                progress.message(f"resuming from step {self.state.step} (checkpoint)")
            total = self._total_steps()
            progress.restart(total, self.state.step)
            with deferred_interrupt() as interrupted:
                self._train(total, progress, interrupted)
        finally:
            progress.close()
        s = self.state
        if s.diverged_at is None and s.evaluations[-1]["step"] != s.step:
            self._evaluate()
        if not s.evaluations:
            raise RuntimeError(f"{spec.label()}: the loss at initialisation is not finite")
        diverged = s.diverged_at is not None
        if diverged:
            progress.message(f"diverged at step {s.diverged_at['step']}")
        return self._result(diverged), diverged

    def _train(
        self, total: int | None, progress: Progress, interrupted: Callable[[], bool]
    ) -> None:
        """The steps, with evaluations, checkpoints and progress (no sync per step); after a
        step during which ``interrupted()`` became true, a checkpoint and ``RunInterrupted``."""
        spec, s = self.spec, self.state
        if not s.evaluations:
            progress.begin("evaluation at step 0")
            self._evaluate()
            progress.end()
        self._last_checkpoint = time.monotonic()
        timer = _Timer(self.device)
        pending: list[torch.Tensor] = []
        done = self._budget_spent(total, 0.0)
        seconds = spec.budget.seconds
        self.driver.before_steps()
        timer.start()
        while not done and s.diverged_at is None:
            for x, y in self.stream.epoch(s.epoch, start=s.batch):
                epoch_end = self._take_step(x, y, progress, pending)
                if interrupted():
                    self._flush(pending, progress)
                    s.train_seconds += timer.stop()
                    self._checkpoint()
                    raise RunInterrupted(spec.label(), s.step)
                every = spec.eval_every
                eval_due = (every is not None and s.step % every == 0) or (
                    every is None and epoch_end
                )
                # Progress, the time budget and time-based checkpoints look at the clock after
                # every step; only the loss read-back waits for check_every steps.
                running = s.train_seconds + timer.peek()
                time_up = seconds is not None and running >= seconds
                checkpoint_due = time.monotonic() - self._last_checkpoint > self.ex.checkpoint_every
                if (
                    len(pending) >= self.ex.check_every
                    or eval_due
                    or total == s.step
                    or time_up
                    or checkpoint_due
                ):
                    self._flush(pending, progress)
                    pending = []
                    if s.diverged_at is not None:
                        s.train_seconds += timer.stop()
                        break
                    done = self._budget_spent(total, timer.peek())
                    if eval_due or done:
                        s.train_seconds += timer.stop()
                        progress.begin(f"evaluation at step {s.step}")
                        self._evaluate()
                        progress.end()
                        if s.diverged_at is not None:
                            break
                        done = self._stop_early() or done
                        self._checkpoint()
                        if not done:
                            self.driver.before_steps()
                            timer.start()
                    elif checkpoint_due:
                        s.train_seconds += timer.stop()
                        self._checkpoint()
                        timer.start()
                epoch = s.step / self.steps_per_epoch
                progress.update(s.step, epoch, None, s.train_seconds + timer.peek())
                if done:
                    break
        if timer.running:
            s.train_seconds += timer.stop()

    def _take_step(self, x: Any, y: Any, progress: Progress, pending: list[torch.Tensor]) -> bool:
        """One optimizer step on the batch (x, y): its loss queued in ``pending`` (read back
        later, not now), its passes counted; whether it ended the epoch."""
        s = self.state
        progress.begin_step(s.step + 1)
        closure = self._closure(x, y)
        try:
            loss = self.driver.step(closure)
        except torch.linalg.LinAlgError:  # a factorisation met non-finite curvature
            loss = torch.full((), math.nan)
        pending.append(loss.detach().reshape(()))
        self._count(closure)
        s.step += 1
        s.batch += 1
        progress.end()
        epoch_end = s.batch == self.steps_per_epoch
        if epoch_end:
            s.epoch, s.batch = s.epoch + 1, 0
        return epoch_end

    def _budget_spent(self, total: int | None, running: float) -> bool:
        seconds = self.spec.budget.seconds
        if self.state.stopped_early is not None:
            return True
        if total is not None and self.state.step >= total:
            return True
        return seconds is not None and self.state.train_seconds + running >= seconds

    def _progress_of_target(self) -> tuple[float, int, int] | None:
        """(best value, its step, the step of the last improvement by ``STALL_TOL``) of the
        target metric over the evaluations so far; None without a target or a finite value."""
        target = self.problem.target
        if target is None:
            return None
        key = f"{'train' if target.split == 'train_eval' else target.split}_{target.metric}"
        sign = 1.0 if target.metric == "loss" else -1.0  # lower is better after the sign
        best = anchor = None
        best_step = anchor_step = 0
        for record in self.state.evaluations:
            value = record.get(key)
            if value is None or not math.isfinite(value):
                continue
            if best is None or sign * value < sign * best:
                best, best_step = value, record["step"]
            if anchor is None or sign * (anchor - value) > STALL_TOL * abs(anchor):
                anchor, anchor_step = value, record["step"]
        return None if best is None else (best, best_step, anchor_step)

    def _stop_early(self) -> bool:
        """Whether an early stop of the budget ends the run at this evaluation (recorded)."""
        s, budget = self.state, self.spec.budget
        if budget.stop_at_target and s.target_reached is not None:
            s.stopped_early = {"reason": "target", "step": s.step}
        elif budget.patience is not None and s.target_reached is None:
            progress = self._progress_of_target()
            if progress is not None and s.step - progress[2] >= budget.patience:
                s.stopped_early = {"reason": "no_improvement", "step": s.step}
        return s.stopped_early is not None

    def _stall(self) -> dict[str, Any] | None:
        """How a run that missed its target ended: its best value, when, and why it stopped."""
        s, target = self.state, self.problem.target
        if target is None or s.target_reached is not None:
            return None
        progress = self._progress_of_target()
        best, best_step, last_improvement = progress or (None, None, None)
        if s.diverged_at is not None:
            reason = "diverged"
        elif s.stopped_early is not None:
            reason = s.stopped_early["reason"]
        else:
            reason = "budget"
        return {
            "metric": target.metric,
            "split": target.split,
            "target": target.value,
            "best": best,
            "best_step": best_step,
            "last_improvement_step": last_improvement,
            "steps": s.step,
            "reason": reason,
            "patience": self.spec.budget.patience,
            "tolerance": STALL_TOL,
        }

    def _count(self, closure: ModelClosure) -> None:
        s = self.state
        s.forward_passes += closure.counts.forward
        s.backward_passes += closure.counts.backward
        products = self.driver.products()
        if products.block:
            s.block_products = [a + b for a, b in zip(s.block_products, products.block)]
        s.full_products += products.full

    def _flush(self, pending: list[torch.Tensor], progress: Progress) -> None:
        """Read the pending mini-batch losses back (the loop's one synchronisation)."""
        if not pending:
            return
        s = self.state
        values = torch.stack(pending).double().tolist()
        first_step = s.step - len(values) + 1
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                step = first_step + offset
                s.diverged_at = {"step": step, "epoch": step / self.steps_per_epoch}
                return
            s.minibatch_losses.append(value)
        progress.loss = values[-1]

    # -- the result ----------------------------------------------------------------------------

    def _result(self, diverged: bool) -> dict[str, Any]:
        spec, s, problem = self.spec, self.state, self.problem
        evals = s.evaluations
        result: dict[str, Any] = {
            "testproblem": spec.problem,
            "batch_size": spec.batch_size,
            "num_epochs": len(evals) - 1,
            "random_seed": spec.seed,
            "weight_decay": spec.weight_decay,
            "optimizer_name": spec.optimizer,
            "optimizer_hyperparams": dict(self.hps),
            "training_params": {},
        }
        for key, _ in EVAL_SPLITS:
            result[f"{key}_losses"] = [e[f"{key}_loss"] for e in evals]
        if problem.correct is not None:
            for key, _ in EVAL_SPLITS:
                result[f"{key}_accuracies"] = [e[f"{key}_accuracy"] for e in evals]
        result["minibatch_train_losses"] = list(s.minibatch_losses)
        target = problem.target
        result.update(
            {
                "schema_version": SCHEMA_VERSION,
                "status": "diverged" if diverged else "finished",
                "budget": {
                    "epochs": spec.budget.epochs,
                    "steps": spec.budget.steps,
                    "time_budget": spec.budget.seconds,
                    "eval_every": spec.eval_every,
                    "patience": spec.budget.patience,
                    "stop_at_target": spec.budget.stop_at_target,
                },
                "evaluations": evals,
                "target": None
                if target is None
                else {
                    "metric": target.metric,
                    "split": target.split,
                    "value": target.value,
                    "source": target.source,
                    "reached": s.target_reached,
                },
                "cost_model": self.cost.as_dict(),
                "data": {
                    "source": spec.data,
                    "sizes": dict(self.splits.sizes),
                    "standard_sizes": dict(self.splits.standard_sizes),
                    "scaled": bool(self.splits.scaled),
                    "fingerprint": self.context["data"],
                },
                "environment": {
                    **environment(self.device),
                    "dtype": self.context["dtype"],
                    "runs_at_once": self.ex.runs_at_once,
                    **{
                        k: v
                        for k, v in self.ex.optimizer_options().items()
                        if k in self.entry.execution_options
                    },
                },
                "steps": s.step,
                "train_seconds": s.train_seconds,
                "diverged_at": s.diverged_at,
                "stopped_early": s.stopped_early,
                "stalled": self._stall(),
            }
        )
        return result

    def setting(self, result: dict[str, Any]) -> str:
        defaults = self.entry.defaults()
        return setting_folder(self.spec, result["num_epochs"], self.spec.weight_decay, defaults)
