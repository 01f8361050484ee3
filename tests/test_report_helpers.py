"""Hand-made result files for the report tests, written exactly as docs/results.md specifies.

``write_run`` builds one schema-1 file from a few numbers (final metrics, when the target was
reached, seconds per step) so that the tests can compute every aggregate by hand. The tests in this
module check the helper itself against the contract's key lists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from results_contract import DEEPOBS_KEYS, EVAL_KEYS, OUR_KEYS

STEPS_PER_EPOCH = 8
STAMP = "2026-01-01-00-00-00"


def float2str(value: float) -> str:
    """DeepOBS's folder spelling of a float (e.g. 1.e-03)."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}.e{exponent}"


def setting_folder(num_epochs: int, batch_size: int, hps: dict[str, Any]) -> str:
    parts = [f"num_epochs__{num_epochs}__batch_size__{batch_size}"]
    for name in sorted(hps):
        value = hps[name]
        shown = float2str(value) if isinstance(value, float) else str(value)
        parts.append(f"{name}__{shown}")
    return "__".join(parts)


def _lerp(start: float, end: float, n: int) -> list[float]:
    return [start + (end - start) * i / (n - 1) for i in range(n)] if n > 1 else [end]


def make_run(
    *,
    problem: str = "mnist_mlp",
    optimizer: str = "adam",
    hps: dict[str, Any] | None = None,
    seed: int = 42,
    kind: str = "accuracy",
    final_test: float = 0.9,
    final_valid: float = 0.9,
    final_train: float | None = None,
    reached_seconds: float | None = None,
    seconds_per_step: float = 0.5,
    ge_per_step: float = 1.0,
    num_epochs: int = 2,
    batch_size: int = 128,
    diverged_after: int | None = None,
    target: tuple[str, str, float] | None = ("accuracy", "test", 0.8),
    data_source: str = "synthetic",
    budget: dict[str, Any] | None = None,
    environment: dict[str, Any] | None = None,
    minibatch: list[float] | None = None,
) -> dict[str, Any]:
    """One result document. ``reached_seconds=None`` is a miss; ``diverged_after=k`` keeps k+1
    evaluations and sets status diverged (its ``steps`` go half an epoch past the last one).
    ``budget`` replaces the epoch budget, ``environment`` adds keys to the environment and
    ``minibatch`` gives the per-step losses (default: 1.0 at every step)."""
    hps = {"lr": 0.001} if hps is None else hps
    n = num_epochs + 1 if diverged_after is None else diverged_after + 1
    epochs = list(range(n))
    start_metric = 0.1 if kind == "accuracy" else 200.0
    full = num_epochs + 1
    test = _lerp(start_metric, final_test, full)[:n]
    valid = _lerp(start_metric, final_valid, full)[:n]
    train = _lerp(start_metric, final_test if final_train is None else final_train, full)[:n]
    loss = {"test": test, "valid": valid, "train": train}
    evaluations = []
    for i, epoch in enumerate(epochs):
        step = epoch * STEPS_PER_EPOCH
        record: dict[str, Any] = {
            "epoch": epoch,
            "step": step,
            "train_seconds": step * seconds_per_step,
            "forward_passes": step,
            "backward_passes": step,
            "curvature_products": 0 if ge_per_step == 1.0 else step * 3,
            "gradient_equivalents": step * ge_per_step,
            "minibatch_loss": 1.0,
            "optimizer": {},
        }
        for split in ("train", "valid", "test"):
            if kind == "accuracy":
                record[f"{split}_accuracy"] = loss[split][i]
                record[f"{split}_loss"] = 2.0 - loss[split][i]
            else:
                record[f"{split}_accuracy"] = None
                record[f"{split}_loss"] = loss[split][i]
        evaluations.append(record)
    steps = evaluations[-1]["step"]
    if diverged_after is not None:
        steps += STEPS_PER_EPOCH // 2
    reached = None
    if reached_seconds is not None:
        step = reached_seconds / seconds_per_step
        reached = {
            "step": step,
            "epoch": step / STEPS_PER_EPOCH,
            "train_seconds": reached_seconds,
            "gradient_equivalents": step * ge_per_step,
            "value": final_test,
        }
    metric_key = "accuracies" if kind == "accuracy" else None
    doc: dict[str, Any] = {
        "testproblem": problem,
        "batch_size": batch_size,
        "num_epochs": num_epochs,
        "random_seed": seed,
        "weight_decay": None,
        "optimizer_name": optimizer,
        "optimizer_hyperparams": hps,
        "training_params": {},
        "train_losses": [e["train_loss"] for e in evaluations],
        "valid_losses": [e["valid_loss"] for e in evaluations],
        "test_losses": [e["test_loss"] for e in evaluations],
        "minibatch_train_losses": [1.0] * steps if minibatch is None else list(minibatch),
        "schema_version": 1,
        "status": "finished" if diverged_after is None else "diverged",
        "budget": budget
        or {"epochs": num_epochs, "steps": None, "time_budget": None, "eval_every": None},
        "evaluations": evaluations,
        "target": None
        if target is None
        else {
            "metric": target[0],
            "split": target[1],
            "value": target[2],
            "source": "test fixture",
            "reached": reached,
        },
        "cost_model": {"gradient": 3.0, "forward": 1.0, "block_products": [], "full_product": 2.0},
        "data": {"source": data_source, "sizes": {}, "standard_sizes": {}, "scaled": True},
        "environment": {
            "torch": "2.5",
            "cuda": None,
            "device": "cpu",
            "device_name": "cpu",
            "bdhf_bench": "0.1.0",
            "git_revision": "abc",
            "python": "3.11",
            "platform": "linux",
            **(environment or {}),
        },
        "steps": steps,
        "train_seconds": steps * seconds_per_step,
        "diverged_at": None
        if diverged_after is None
        else {"step": steps, "epoch": steps / STEPS_PER_EPOCH},
    }
    for split in ("train", "valid", "test"):
        doc[f"{split}_accuracies"] = (
            [e[f"{split}_accuracy"] for e in evaluations] if metric_key else None
        )
    if metric_key is None:
        for split in ("train", "valid", "test"):
            del doc[f"{split}_accuracies"]
    return doc


def write_doc(root: Path, doc: dict[str, Any], *, name: str | None = None) -> Path:
    """Write ``doc`` where the runner would: under ``_diverged/`` when it diverged."""
    folder = root / "_diverged" if doc.get("status") == "diverged" else root
    folder = (
        folder
        / doc["testproblem"]
        / doc["optimizer_name"]
        / setting_folder(doc["num_epochs"], doc["batch_size"], doc["optimizer_hyperparams"])
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"random_seed__{doc['random_seed']}__{STAMP}.json")
    path.write_text(json.dumps(doc, indent=1))
    return path


def write_run(root: Path, **kwargs: Any) -> Path:
    """:func:`make_run` then :func:`write_doc`."""
    return write_doc(root, make_run(**kwargs))


def test_helper_writes_every_contract_key(tmp_path: Path) -> None:
    doc = make_run()
    assert set(doc) >= DEEPOBS_KEYS | OUR_KEYS
    for record in doc["evaluations"]:
        assert set(record) == EVAL_KEYS
    assert len(doc["train_losses"]) == doc["num_epochs"] + 1
    assert len(doc["minibatch_train_losses"]) == doc["steps"]
    path = write_run(tmp_path, seed=7, diverged_after=1)
    assert path.relative_to(tmp_path).parts[0] == "_diverged"
    assert json.loads(path.read_text())["status"] == "diverged"


def test_setting_folder_follows_deepobs_spelling() -> None:
    assert setting_folder(2, 128, {"lr": 0.001}) == "num_epochs__2__batch_size__128__lr__1.e-03"


# -- the shared scenario ---------------------------------------------------------------------------

P1, P2 = "mnist_mlp", "mnist_autoencoder"
ACC_TARGET = ("accuracy", "test", 0.2)
LOSS_TARGET = ("loss", "test", 100.0)
BDHF_HI = {"curvature_fraction": 0.25, "damping": 1.0}
BDHF_LO = {"curvature_fraction": 0.125, "damping": 1.0}


def write_scenario(root: Path) -> Path:
    """Two problems, three optimizers, several settings, misses and a diverged seed.

    Every number the aggregate tests expect is derived by hand from the arguments below."""
    acc = {"problem": P1, "target": ACC_TARGET}
    # adam on P1: the selected setting (valid 0.5), a better-on-TEST one (valid 0.375) and one
    # with a diverged seed (valid 0.875 on its other seed)
    for seed, test, reached in zip((1, 2, 3, 4), (0.25, 0.25, 0.75, 0.75), (2.0, 4.0, 6.0, None)):
        write_run(root, **acc, seed=seed, final_test=test, final_valid=0.5, reached_seconds=reached)
    for seed in (1, 2):
        write_run(root, **acc, hps={"lr": 0.01}, seed=seed, final_test=1.0, final_valid=0.375)
    write_run(root, **acc, hps={"lr": 0.1}, seed=1, final_test=0.9, final_valid=0.875)
    write_run(root, **acc, hps={"lr": 0.1}, seed=2, final_valid=0.875, diverged_after=1)
    # bdhf on P1: fraction 1/4 has a diverged seed, so fraction 1/8 is selected
    bdhf = {**acc, "optimizer": "bdhf", "seconds_per_step": 2.0}
    for seed, test, reached in zip((1, 3, 4), (0.25, 0.5, 0.75), (10.0, 20.0, 30.0)):
        write_run(
            root,
            **bdhf,
            hps=BDHF_HI,
            seed=seed,
            final_test=test,
            final_valid=0.75,
            reached_seconds=reached,
            ge_per_step=4.0,
        )
    write_run(
        root, **bdhf, hps=BDHF_HI, seed=2, final_valid=0.75, diverged_after=1, ge_per_step=4.0
    )
    for seed, test in zip((1, 2, 3), (0.375, 0.5, 0.625)):
        write_run(
            root,
            **bdhf,
            hps=BDHF_LO,
            seed=seed,
            final_test=test,
            final_valid=0.625,
            reached_seconds=12.0,
            ge_per_step=3.0,
        )
    # hf on P1: misses the target with most seeds
    hf = {**acc, "optimizer": "hf", "seconds_per_step": 3.0, "ge_per_step": 5.0}
    for seed, reached in zip((1, 2, 3, 4), (8.0, None, None, None)):
        write_run(
            root,
            **hf,
            hps=BDHF_HI,
            seed=seed,
            final_test=0.5,
            final_valid=0.5,
            reached_seconds=reached,
        )
    for seed, reached in zip((1, 2), (9.0, None)):
        write_run(
            root,
            **hf,
            hps=BDHF_LO,
            seed=seed,
            final_test=0.5,
            final_valid=0.25,
            reached_seconds=reached,
        )
    # P2, a loss problem: one setting each
    loss = {"problem": P2, "kind": "loss", "target": LOSS_TARGET, "final_valid": 91.0}
    for seed, test in zip((1, 2, 3), (90.0, 92.0, 94.0)):
        write_run(root, **loss, seed=seed, final_test=test, reached_seconds=4.0)
    for seed in (1, 2, 3):
        write_run(
            root,
            **loss,
            optimizer="bdhf",
            hps=BDHF_HI,
            seed=seed,
            final_test=95.0,
            reached_seconds=2.0,
            seconds_per_step=2.0,
            ge_per_step=4.0,
        )
    for seed, reached in zip((1, 2, 3), (3.0, 3.0, None)):
        write_run(
            root,
            **loss,
            optimizer="hf",
            hps=BDHF_HI,
            seed=seed,
            final_test=96.0,
            reached_seconds=reached,
            seconds_per_step=3.0,
            ge_per_step=5.0,
        )
    return root


BASELINES_CSV = """\
testproblem,metric,optimizer,lr,other_hyperparams,n_seeds,final_mean,final_std_pop,speed_epochs,num_epochs,batch_size,conv_perf
mnist_mlp,test_accuracies,AdamOptimizer,0.001,beta1=0.9;beta2=0.999;epsilon=1e-08,10,0.5,0.01,1.5,2,128,0.2
mnist_mlp,test_accuracies,MomentumOptimizer,0.01,momentum=0.99;use_nesterov=False,10,0.45,0.02,3.0,2,128,0.2
fmnist_vae,test_losses,AdamOptimizer,0.000158489,beta1=0.9;beta2=0.999;epsilon=1e-08,10,23.07,0.09,1.0,100,64,92.97
"""


def write_baselines(path: Path) -> Path:
    """A tiny CSV in the format of baselines/deepobs_baselines_v1.1.csv (made-up numbers)."""
    path.write_text(BASELINES_CSV)
    return path
