"""Block-diagonal Hessian-free optimization and Martens' full Hessian-free, on one engine.

One step of ``BlockDiagonalHF`` (Zhang, Xiong, Bradbury, Socher 2017):

1. gradient ``g`` on the mini-batch (``closure()``);
2. the GGN on a sub-batch of it (``curvature_fraction``), from one forward pass;
3. one CG run per block on ``(G_bb + lambda_b I) d_b = -g_b``, all blocks in lock-step, warm
   started from ``warm_start`` times the previous solution;
4. the combined direction ``d`` is scaled to ``alpha d`` with ``alpha = min(1, -g.d / d^T G d)``,
   the minimiser of the undamped full-GGN quadratic model along ``d`` (one full GGN product);
5. the reduction ratio ``rho`` of the combined step ``alpha d`` against that model, on the
   curvature sub-batch, and Levenberg-Marquardt damping: ``rho < 1/4`` -> ``lambda *= 3/2``,
   ``rho > 3/4`` -> ``*= 2/3`` (one global lambda, or one per block with
   ``damping_mode="per_block"``, each block's rho then against its own block model);
6. the step length by Armijo backtracking from ``alpha d`` on the mini-batch, or a fixed rate.

Step 4 is our choice where the paper is silent. Block solutions are each optimal with the other
blocks held still; added together they overshoot along directions the blocks share (as Jacobi
iteration does), and a rho measured against the block-diagonal model then reads that overshoot
as a bad model and drives the damping up until BDHF crawls. The full-GGN model along ``d``
(K-FAC rescales its steps the same way) fixes the step length and keeps rho meaningful. With a
single block ``alpha = 1`` up to rounding (the CG solution of the damped system already
satisfies ``-g.d >= d^T G d``), so HF is Martens' method unchanged.

``HessianFree`` is the same class with all parameters in one block, plus Martens' parts:
CG-backtracking over the kept iterates and 250 CG iterations by default. Everything else is
shared: there is one copy of CG, damping and line search.

Where the paper is silent (damping values, CG limits, step rule) the defaults are Martens'
(2010 and his released code): rho thresholds and factors, CG tolerance 5e-4, warm start 0.95,
Armijo c = 1e-2 / shrink 0.8 / 60 tries. ``curvature_fraction = 1/4`` is from the paper's
curvature-batch study. The initial damping (0.1) and BDHF's CG limit (50 per block) are ours,
chosen on the DeepOBS and paper problems (see docs/optimizers.md).

A step that meets a non-finite loss, gradient or curvature, a non-descent direction, or a failed
line search leaves the parameters bitwise unchanged, raises the damping, and says so in
``last_step``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..curvature import BlockLayout, GGNContext, block_cg
from .closure import ModelClosure
from .preconditioner import squared_gradient_diagonal

DAMPING_MODES = ("global", "per_block")
STEP_RULES = ("armijo", "fixed")


@dataclass
class StepStats:
    """What one HF step did (``optimizer.last_step``); the runner logs these."""

    loss: float = math.nan
    """The mini-batch objective before the step."""
    accepted: bool = False
    outcome: str = "accepted"
    """accepted, nonfinite_loss, nonfinite_curvature, not_descent, line_search_failed."""
    step_size: float = 0.0
    rho: list[float] = field(default_factory=list)
    damping: list[float] = field(default_factory=list)
    """Lambda after the step, per block."""
    cg_iterations: list[int] = field(default_factory=list)
    cg_stop_reasons: list[str] = field(default_factory=list)
    block_products: list[int] = field(default_factory=list)
    """GGN block products per block (CG's), each on the curvature sub-batch."""
    full_products: int = 0
    """Full GGN products (the step scale and rho), on the curvature sub-batch."""
    curvature_share: float = 0.0
    """The curvature sub-batch as a fraction of the mini-batch."""
    forward_passes: float = 0.0
    """Forward passes, in units of the mini-batch (curvature and extra evaluations included)."""
    backward_passes: float = 0.0
    line_search_evals: int = 0
    backtrack_evals: int = 0
    chosen_iteration: int = 0
    """The CG iteration whose iterate became the direction."""


def _check(name: str, value: Any, ok: bool, valid: str) -> None:
    if not ok:
        raise ValueError(f"invalid {name}={value!r}: must be {valid}")


class BlockDiagonalHF(torch.optim.Optimizer):
    """Block-diagonal Hessian-free optimization (BDHF).

    Each parameter group is one block (use ``bdhf_bench.curvature.partition`` and
    ``param_groups_from_blocks`` for one block per layer). ``step`` takes a ``ModelClosure``.

    Args:
        params: parameters or parameter groups; each group is one block.
        curvature_fraction: the curvature sub-batch as a fraction of the mini-batch, in (0, 1].
        damping: initial Levenberg-Marquardt lambda, > 0.
        damping_mode: "global" (one lambda from the combined step's rho) or "per_block".
        cg_max_iters, cg_min_iters, cg_tol: CG limits and Martens' progress tolerance.
        warm_start: decay of the previous CG solution used as the next start, in [0, 1].
        step_rule: "armijo" (backtracking line search) or "fixed" (``lr`` times the direction).
        lr: the fixed step length (``step_rule="fixed"``).
        armijo_c, armijo_shrink, armijo_max_tries: the line search.
        precondition: Martens' (diag of squared per-example gradients + lambda)^0.75.
        backtrack: CG-backtracking over the iterates kept at ceil(5 * 1.3^j).
        damping_boost, damping_drop: lambda's factors for rho < 1/4 and rho > 3/4.
    """

    single_block = False

    def __init__(
        self,
        params: Iterable[Any],
        *,
        curvature_fraction: float = 0.25,
        damping: float = 0.1,
        damping_mode: str = "global",
        cg_max_iters: int = 50,
        cg_min_iters: int = 1,
        cg_tol: float = 5e-4,
        warm_start: float = 0.95,
        step_rule: str = "armijo",
        lr: float = 1.0,
        armijo_c: float = 1e-2,
        armijo_shrink: float = 0.8,
        armijo_max_tries: int = 60,
        precondition: bool = False,
        backtrack: bool = False,
        damping_boost: float = 1.5,
        damping_drop: float = 2.0 / 3.0,
    ) -> None:
        _check("curvature_fraction", curvature_fraction, 0 < curvature_fraction <= 1, "in (0, 1]")
        _check("damping", damping, damping > 0 and math.isfinite(damping), "a finite number > 0")
        _check(
            "damping_mode", damping_mode, damping_mode in DAMPING_MODES, f"one of {DAMPING_MODES}"
        )
        _check("cg_max_iters", cg_max_iters, int(cg_max_iters) >= 1, "an integer >= 1")
        _check(
            "cg_min_iters",
            cg_min_iters,
            0 <= int(cg_min_iters) <= cg_max_iters,
            "in [0, cg_max_iters]",
        )
        _check("cg_tol", cg_tol, cg_tol > 0, "> 0")
        _check("warm_start", warm_start, 0 <= warm_start <= 1, "in [0, 1]")
        _check("step_rule", step_rule, step_rule in STEP_RULES, f"one of {STEP_RULES}")
        _check("lr", lr, lr > 0 and math.isfinite(lr), "a finite number > 0")
        _check("armijo_c", armijo_c, 0 < armijo_c < 1, "in (0, 1)")
        _check("armijo_shrink", armijo_shrink, 0 < armijo_shrink < 1, "in (0, 1)")
        _check("armijo_max_tries", armijo_max_tries, int(armijo_max_tries) >= 1, "an integer >= 1")
        _check("damping_boost", damping_boost, damping_boost > 1, "> 1")
        _check("damping_drop", damping_drop, 0 < damping_drop < 1, "in (0, 1)")
        defaults = {
            "curvature_fraction": float(curvature_fraction),
            "damping": float(damping),
            "damping_mode": damping_mode,
            "cg_max_iters": int(cg_max_iters),
            "cg_min_iters": int(cg_min_iters),
            "cg_tol": float(cg_tol),
            "warm_start": float(warm_start),
            "step_rule": step_rule,
            "lr": float(lr),
            "armijo_c": float(armijo_c),
            "armijo_shrink": float(armijo_shrink),
            "armijo_max_tries": int(armijo_max_tries),
            "precondition": bool(precondition),
            "backtrack": bool(backtrack),
            "damping_boost": float(damping_boost),
            "damping_drop": float(damping_drop),
        }
        super().__init__(params, defaults)
        self.hp = defaults
        self.totals: dict[str, float] = {
            "steps": 0,
            "accepted": 0,
            "rejected": 0,
            "forward_passes": 0.0,
            "backward_passes": 0.0,
            "block_products": 0,
            "full_products": 0,
            "cg_iterations": 0,
            "line_search_evals": 0,
        }
        self.last_step = StepStats()
        self._layout: BlockLayout | None = None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._layout = None

    # -- blocks --------------------------------------------------------------------------------

    def blocks(self) -> list[list[Tensor]]:
        """The blocks: one per parameter group (one in all for HessianFree)."""
        groups = [[p for p in g["params"] if p.requires_grad] for g in self.param_groups]
        groups = [g for g in groups if g]
        if self.single_block:
            return [[p for g in groups for p in g]]
        return groups

    def layout(self) -> BlockLayout:
        if self._layout is None:
            blocks = self.blocks()
            names = [g.get("name", f"group{i}") for i, g in enumerate(self.param_groups)]
            self._layout = BlockLayout(blocks, names if len(names) == len(blocks) else None)
        return self._layout

    def _damping(self) -> list[float]:
        if self.single_block or self.hp["damping_mode"] == "global":
            return [self.param_groups[0]["damping"]] * self.layout().num_blocks
        return [g["damping"] for g in self.param_groups]

    def _set_damping(self, values: list[float]) -> None:
        if self.single_block or self.hp["damping_mode"] == "global":
            for g in self.param_groups:
                g["damping"] = values[0]
        else:
            for g, v in zip(self.param_groups, values):
                g["damping"] = v

    # -- the step ------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: ModelClosure) -> Tensor:  # type: ignore[override]
        """One HF step on the closure's mini-batch; returns the loss before the step."""
        if not isinstance(closure, ModelClosure):
            raise TypeError(
                f"{type(self).__name__}.step needs a bdhf_bench.optim.ModelClosure, "
                f"got {type(closure).__name__}"
            )
        hp, layout = self.hp, self.layout()
        known = {id(p) for p in closure.params}
        if any(id(p) not in known for p in layout.params):
            raise ValueError("the closure's model does not own every parameter of the optimizer")
        passes0 = (closure.counts.forward, closure.counts.backward)
        stats = StepStats(damping=self._damping())
        self.last_step = stats

        f0 = closure()
        stats.loss = f0.item()
        g = layout.pack([p.grad for p in layout.params])
        theta0 = [p.detach().clone() for p in layout.params]
        if not (math.isfinite(stats.loss) and bool(torch.isfinite(g).all())):
            self._finish(stats, closure, passes0, theta0, "nonfinite_loss")
            return f0

        ctx = closure.curvature(hp["curvature_fraction"])
        stats.curvature_share = closure.curvature_share
        lam = self._damping()
        precond = None
        if hp["precondition"]:
            diag = squared_gradient_diagonal(closure, layout)
            l2 = layout.pack([torch.full_like(p, c) for p, c in self._l2_by_param(closure)])
            precond = diag + l2
            for (lo, hi), lam_b in zip(layout.block_bounds, lam):
                precond[lo:hi] += lam_b
            precond = precond.pow_(0.75)
        res = block_cg(
            lambda v, active: ctx.layout_mvp(layout, v, active),
            -g,
            layout,
            lam,
            x0=self._warm_start(layout),
            max_iters=hp["cg_max_iters"],
            min_iters=hp["cg_min_iters"],
            tol=hp["cg_tol"],
            preconditioner=precond,
            keep_iterates=hp["backtrack"],
        )
        stats.cg_iterations = res.iterations
        stats.cg_stop_reasons = res.stop_reasons
        stats.block_products = list(res.block_products)
        self._store_warm_start(layout, res.x)
        if "nonfinite" in res.stop_reasons or not bool(torch.isfinite(res.x).all()):
            self._finish(stats, closure, passes0, theta0, "nonfinite_curvature", ctx=ctx)
            return f0

        d, f_d = res.x, None
        stats.chosen_iteration = max(res.iterations)
        if hp["backtrack"] and res.iterates:
            d, f_d, stats.chosen_iteration, stats.backtrack_evals = self._backtrack(
                closure, layout, theta0, res.iterates
            )
        gd = float(torch.dot(g, d))
        if not gd < 0:
            self._finish(stats, closure, passes0, theta0, "not_descent", ctx=ctx)
            return f0

        alpha, rho = self._scale_and_rho(closure, ctx, layout, theta0, g, d, stats)
        stats.rho = rho
        self._update_damping(rho)

        if alpha != 1.0:
            d, gd, f_d = d * alpha, gd * alpha, None
        t = self._step_length(closure, layout, theta0, d, float(f0), gd, f_d, stats)
        if t is None:
            self._finish(stats, closure, passes0, theta0, "line_search_failed", False, ctx)
            return f0
        self._place(layout, theta0, d, t)
        stats.step_size = t * alpha
        self._finish(stats, closure, passes0, None, "accepted", False, ctx)
        return f0

    # -- pieces of the step --------------------------------------------------------------------

    def _l2_by_param(self, closure: ModelClosure) -> list[tuple[Tensor, float]]:
        coeff = {id(p): c for p, c in zip(closure.params, closure.l2)}
        return [(p, coeff[id(p)]) for p in self.layout().params]

    def _warm_start(self, layout: BlockLayout) -> Tensor | None:
        decay = self.hp["warm_start"]
        prev = [self.state[p].get("cg_solution") for p in layout.params]
        if decay == 0 or any(v is None for v in prev):
            return None
        return layout.pack(prev).mul_(decay)

    def _store_warm_start(self, layout: BlockLayout, x: Tensor) -> None:
        finite = bool(torch.isfinite(x).all())
        for p, v in zip(layout.params, layout.unpack(x)):
            self.state[p]["cg_solution"] = v.clone() if finite else torch.zeros_like(p)

    @staticmethod
    def _place(layout: BlockLayout, theta0: list[Tensor], d: Tensor, t: float) -> None:
        """Set the parameters to theta0 + t d."""
        for p, p0, dp in zip(layout.params, theta0, layout.unpack(d)):
            torch.add(p0, dp, alpha=t, out=p.data)

    @staticmethod
    def _restore(layout: BlockLayout, theta0: list[Tensor]) -> None:
        for p, p0 in zip(layout.params, theta0):
            p.data.copy_(p0)

    def _backtrack(
        self,
        closure: ModelClosure,
        layout: BlockLayout,
        theta0: list[Tensor],
        iterates: list[tuple[int, Tensor]],
    ) -> tuple[Tensor, float, int, int]:
        """Martens' CG-backtracking: from the last kept iterate walk back while the mini-batch
        objective keeps improving. Returns the iterate, its objective, its CG iteration and
        the number of evaluations."""
        best_i, best_x = iterates[-1]
        self._place(layout, theta0, best_x, 1.0)
        best_f = float(closure.evaluate("batch"))
        evals = 1
        for i, x in reversed(iterates[:-1]):
            self._place(layout, theta0, x, 1.0)
            f = float(closure.evaluate("batch"))
            evals += 1
            if not f <= best_f:
                break
            best_i, best_x, best_f = i, x, f
        self._restore(layout, theta0)
        return best_x, best_f, best_i, evals

    def _scale_and_rho(
        self,
        closure: ModelClosure,
        ctx: GGNContext,
        layout: BlockLayout,
        theta0: list[Tensor],
        g: Tensor,
        d: Tensor,
        stats: StepStats,
    ) -> tuple[float, list[float]]:
        """The step scale ``alpha`` and rho = actual / predicted reduction of ``alpha d``.

        As in Martens' code the model has no damping, the actual reduction is measured on the
        curvature sub-batch, and ``rho = -inf`` when the objective went up.
        """
        f_c0 = float(ctx.loss_value())
        gd_blocks = layout.block_dot(g, d)
        gd = float(gd_blocks.sum())
        dgd = float(torch.dot(d, ctx.layout_full_mvp(layout, d)))
        stats.full_products += 1
        alpha = min(1.0, -gd / dgd) if dgd > 0 else 1.0
        if self.single_block or self.hp["damping_mode"] == "global":
            predicted = [alpha * gd + 0.5 * alpha**2 * dgd]
            self._place(layout, theta0, d, alpha)
            actual = [float(closure.evaluate("curvature")) - f_c0]
        else:
            everyone = [True] * layout.num_blocks
            dgd_blocks = layout.block_dot(d, ctx.layout_mvp(layout, d, everyone))
            stats.block_products = [n + 1 for n in stats.block_products]
            predicted = (alpha * gd_blocks + 0.5 * alpha**2 * dgd_blocks).tolist()
            actual = []
            for lo, hi in layout.block_bounds:
                only = torch.zeros_like(d)
                only[lo:hi] = d[lo:hi]
                self._place(layout, theta0, only, alpha)
                actual.append(float(closure.evaluate("curvature")) - f_c0)
        self._restore(layout, theta0)
        rho = [
            a / p if math.isfinite(a) and a <= 0 and p < 0 else -math.inf
            for a, p in zip(actual, predicted)
        ]
        return alpha, rho

    def _update_damping(self, rho: list[float]) -> None:
        boost, drop = self.hp["damping_boost"], self.hp["damping_drop"]
        lam = self._damping()
        if len(rho) == 1:
            rho = rho * len(lam)
        new = []
        for r, value in zip(rho, lam):
            if not r >= 0.25:  # also NaN
                value *= boost
            elif r > 0.75:
                value *= drop
            new.append(value)
        self._set_damping(new)

    def _step_length(
        self,
        closure: ModelClosure,
        layout: BlockLayout,
        theta0: list[Tensor],
        d: Tensor,
        f0: float,
        gd: float,
        f_d: float | None,
        stats: StepStats,
    ) -> float | None:
        """Armijo backtracking (Martens' code: c, shrink, tries), or the fixed rate."""
        hp = self.hp
        if hp["step_rule"] == "fixed":
            return hp["lr"]
        t = 1.0
        for attempt in range(hp["armijo_max_tries"]):
            if attempt == 0 and f_d is not None:
                f = f_d
            else:
                self._place(layout, theta0, d, t)
                f = float(closure.evaluate("batch"))
                stats.line_search_evals += 1
            if math.isfinite(f) and f <= f0 + hp["armijo_c"] * t * gd:
                return t
            t *= hp["armijo_shrink"]
        return None

    def _finish(
        self,
        stats: StepStats,
        closure: ModelClosure,
        passes0: tuple[float, float],
        theta0: list[Tensor] | None,
        outcome: str,
        damp: bool = True,
        ctx: GGNContext | None = None,
    ) -> None:
        layout = self.layout()
        if ctx is not None and ctx.graph_built:
            # recording J^T u for the products was one backward pass on the curvature batch
            closure.counts.backward += closure.curvature_share
        if theta0 is not None:
            self._restore(layout, theta0)
        if outcome != "accepted":
            if damp:
                self._set_damping([v * self.hp["damping_boost"] for v in self._damping()])
            if outcome in ("nonfinite_loss", "nonfinite_curvature", "not_descent"):
                for p in layout.params:
                    self.state[p].pop("cg_solution", None)
        stats.outcome = outcome
        stats.accepted = outcome == "accepted"
        stats.damping = self._damping()
        stats.forward_passes = closure.counts.forward - passes0[0]
        stats.backward_passes = closure.counts.backward - passes0[1]
        if not stats.block_products:
            stats.block_products = [0] * layout.num_blocks
        if not stats.cg_iterations:
            stats.cg_iterations = [0] * layout.num_blocks
        t = self.totals
        t["steps"] += 1
        t["accepted" if stats.accepted else "rejected"] += 1
        t["forward_passes"] += stats.forward_passes
        t["backward_passes"] += stats.backward_passes
        t["block_products"] += sum(stats.block_products)
        t["full_products"] += stats.full_products
        t["cg_iterations"] += sum(stats.cg_iterations)
        t["line_search_evals"] += stats.line_search_evals

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["hf"] = {"totals": dict(self.totals), "last_step": asdict(self.last_step)}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("hf", None)
        super().load_state_dict(state_dict)
        if extra is not None:
            self.totals = dict(extra["totals"])
            self.last_step = StepStats(**extra["last_step"])
        self._layout = None


class HessianFree(BlockDiagonalHF):
    """Martens' Hessian-free optimization (2010): the same engine with a single block,
    CG-backtracking, and at most 250 CG iterations by default."""

    single_block = True

    def __init__(
        self,
        params: Iterable[Any],
        *,
        cg_max_iters: int = 250,
        backtrack: bool = True,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("damping_mode", "global") != "global":
            raise ValueError("invalid damping_mode: HessianFree has one block, so only 'global'")
        super().__init__(params, cg_max_iters=cg_max_iters, backtrack=backtrack, **kwargs)


def param_groups_from_blocks(blocks: Iterable[Any]) -> list[dict[str, Any]]:
    """Parameter groups for ``BlockDiagonalHF``, one per ``ParamBlock`` (named after it)."""
    return [{"params": list(b.params), "name": b.name} for b in blocks]
