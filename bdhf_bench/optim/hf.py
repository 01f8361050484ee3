"""Block-diagonal Hessian-free optimization and Martens' full Hessian-free, on one engine.

One step of ``BlockDiagonalHF`` (Zhang, Xiong, Bradbury, Socher 2017):

1. gradient ``g`` on the mini-batch (``closure()``);
2. the GGN on a sub-batch of it (``curvature_fraction``), from one forward pass; by default
   (``"auto"``) the sub-batch is the whole mini-batch when the mini-batch is at least 4 times
   the gradient noise scale and a quarter of it otherwise (``noise_rules``: two estimates from
   the mini-batch's halves, half a gradient more per step);
3. one CG run per block on ``(G_bb + lambda_b I) d_b = -g_b``, all blocks in lock-step, warm
   started from ``warm_start`` times the previous solution;
4. the block solutions are combined with the full GGN: by default (``combine="coefficients"``)
   into ``s = sum_b a_b d_b``, the minimiser of the damped full-GGN quadratic model over the
   span of the block directions (one full GGN product per block, ``hf_rules.block_coefficients``);
   with ``combine="scale"``, with one block (HF) or with per-block damping, into ``alpha d``,
   ``alpha = min(1, -g.d / d^T G d)`` the minimiser of the undamped model along the summed
   ``d`` (one full product); ``rescale=False`` skips this: the plain block step;
5. the reduction ratio ``rho`` of that step against the undamped full-GGN model (with
   ``rescale=False``: the block-diagonal model the step minimises), on the
   curvature sub-batch, and Levenberg-Marquardt damping: ``rho < 1/4`` -> ``lambda *= 3/2``,
   ``rho > 3/4`` -> ``*= 2/3`` (one global lambda, or one per block with
   ``damping_mode="per_block"``, each block's rho then against its own block model);
6. the step length by Armijo backtracking from that step on the mini-batch, or a fixed rate.

Step 4 is our choice where the paper is silent. Block solutions are each optimal with the other
blocks held still; added together they overshoot along directions the blocks share (as Jacobi
iteration does), and a rho measured against the block-diagonal model then reads that overshoot
as a bad model and drives the damping up until BDHF crawls. One factor along ``d`` (K-FAC
rescales its steps the same way) fixes the step's length; a factor per block also restores how
the blocks move the outputs together, which on an LSTM decides whether BDHF leaves its plateau
(docs/optimizers.md).

For HF (one block) ``alpha = 1`` whenever CG started from zero: every CG iterate from zero
minimises the damped model along its own ray, so ``-g.d = d^T G d + lambda |d|^2 >= d^T G d``.
From a warm start that no longer holds, and after a poor warm start ``alpha < 1``: HF then
steps to the minimiser of the undamped full-GGN model along ``d``, where Martens' code relies
on the line search alone. ``last_step.scale`` records alpha, ``last_step.block_coefficients``
the factors per block.

``HessianFree`` is the same class with all parameters in one block, plus Martens' parts:
CG-backtracking over the kept iterates and 250 CG iterations by default. Everything else is
shared: there is one copy of CG, damping and line search.

Where the paper is silent (damping values, CG limits, step rule) the defaults are Martens'
(2010 and his released code): rho thresholds and factors, CG tolerance 5e-4, warm start 0.95,
Armijo c = 1e-2 / shrink 0.8 / 60 tries. The quarter of the automatic curvature fraction is
from the paper's curvature-batch study. The initial damping (the curvature start, factor 1),
BDHF's CG limit (50 per block), its block coefficients and the automatic fraction's switch are
ours, chosen on the CI and paper problems (see docs/optimizers.md).

A step that meets a non-finite loss, gradient or curvature, a non-descent direction, or a failed
line search leaves the parameters bitwise unchanged, raises the damping (a failed line search:
by rho's rule only; a zero direction: not at all), and says so in ``last_step``; a step never
raises for a numerical reason. Lambda stays in ``[damping_min, damping_max]``.

The hyperparameters live in the parameter groups and are read at every step (torch.optim's
contract), so schedulers, per-group settings and ``load_state_dict`` take effect.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..curvature import (
    BlockLayout,
    CGResult,
    GGNContext,
    GGNOperator,
    Workspace,
    all_finite,
    block_cg,
)
from .closure import ModelClosure
from .damping_rules import curvature_damping, rayleigh_quotients
from .hf_rules import (
    armijo_accepts,
    block_coefficients,
    levenberg_marquardt,
    predicted_reduction,
    reduction_ratio,
    span_reduction,
    step_scale,
)
from .noise_rules import (
    AUTO_FRACTIONS,
    auto_fraction,
    batch_over_noise,
    half_means,
    moving_average,
    noise_estimate,
    signal_estimate,
)
from .preconditioner import squared_gradient_diagonal

DAMPING_MODES = ("global", "per_block")
DAMPING_STARTS = ("fixed", "curvature")
"""``fixed``: lambda starts at ``damping``; ``curvature``: at ``damping`` times the GGN's
Rayleigh quotient along the first gradient (``damping_rules``), which scales with the loss."""
DAMPING_RANGE = (1e-12, 1e12)
"""The default range of lambda (``damping_min``, ``damping_max``)."""
STEP_RULES = ("armijo", "fixed")
COMBINE_RULES = ("scale", "coefficients")
"""How ``rescale`` corrects BDHF's summed block step with the full GGN: ``scale``, one factor
along it; ``coefficients``, one factor per block (``hf_rules.block_coefficients``)."""


@dataclass
class StepStats:
    """What one HF step did (``optimizer.last_step``); the runner logs these."""

    loss: float = math.nan
    """The mini-batch objective before the step."""
    accepted: bool = False
    outcome: str = "accepted"
    """accepted, nonfinite_loss, nonfinite_curvature, not_descent, line_search_failed."""
    step_size: float = 0.0
    """The step taken as a multiple of the CG direction: ``scale`` times the step length."""
    scale: float = 1.0
    """The step scale alpha (1 unless the full-GGN model along the direction is shorter)."""
    rho: list[float] = field(default_factory=list)
    """Per block in per_block mode (NaN: a zero block direction, no information), else one."""
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
    batch_over_noise: float = math.nan
    """``B / B_noise`` from the moving averages that chose the fraction
    (``curvature_fraction="auto"``; NaN otherwise)."""
    forward_passes: float = 0.0
    """Forward passes, in units of the mini-batch (curvature and extra evaluations included)."""
    backward_passes: float = 0.0
    line_search_evals: int = 0
    backtrack_evals: int = 0
    chosen_iteration: int = 0
    """The CG iteration whose iterate became the direction."""
    block_coefficients: list[float] = field(default_factory=list)
    """Each block's factor in the step (``combine="coefficients"``; empty otherwise)."""


ZERO_NOISE: dict[str, float] = {"signal": 0.0, "noise": 0.0, "steps": 0}
"""``optimizer.noise`` before the first step: the moving averages of ``|G|^2`` and
``tr(Sigma)`` behind ``curvature_fraction="auto"``, and how many steps they hold."""

ZERO_TOTALS: dict[str, float] = {
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
"""``optimizer.totals`` before the first step: counts over the optimizer's life."""


def _fraction_setting(value: float | str) -> float | str:
    """``"auto"`` as given, a number as a float (an invalid value is left for ``_validate``)."""
    if value == "auto" or isinstance(value, str | bool):
        return value
    return float(value)


def _check(name: str, value: Any, ok: bool, valid: str) -> None:
    if not ok:
        raise ValueError(f"invalid {name}={value!r}: must be {valid}")


STEP_SETTINGS = (
    "curvature_fraction",
    "damping_mode",
    "damping_start",
    "step_rule",
    "lr",
    "armijo_c",
    "armijo_shrink",
    "armijo_max_tries",
    "precondition",
    "backtrack",
    "rescale",
    "combine",
    "combine_damping",
    "damping_boost",
    "damping_drop",
    "damping_min",
    "damping_max",
)
"""Settings of the whole step (one sub-batch, one line search): every group must agree."""

BLOCK_SETTINGS = ("cg_max_iters", "cg_min_iters", "cg_tol", "warm_start")
"""Settings of one block's CG run: one per parameter group in BDHF (each group is a block)."""


def _validate(s: dict[str, Any]) -> None:
    """Check one parameter group's settings (the constructor's, or a group's at each step)."""
    f = s["curvature_fraction"]
    ok = f == "auto" or (isinstance(f, int | float) and not isinstance(f, bool) and 0 < f <= 1)
    _check("curvature_fraction", f, ok, "'auto' or a number in (0, 1]")
    _check(
        "damping_min",
        s["damping_min"],
        0 < s["damping_min"] <= s["damping_max"] < math.inf,
        "> 0 and <= damping_max, which must be finite",
    )
    _check(
        "damping",
        s["damping"],
        s["damping_min"] <= s["damping"] <= s["damping_max"],
        f"in [damping_min, damping_max] = [{s['damping_min']:g}, {s['damping_max']:g}]",
    )
    mode = s["damping_mode"]
    _check("damping_mode", mode, mode in DAMPING_MODES, f"one of {DAMPING_MODES}")
    start = s["damping_start"]
    _check("damping_start", start, start in DAMPING_STARTS, f"one of {DAMPING_STARTS}")
    _check("cg_max_iters", s["cg_max_iters"], int(s["cg_max_iters"]) >= 1, "an integer >= 1")
    _check(
        "cg_min_iters",
        s["cg_min_iters"],
        0 <= int(s["cg_min_iters"]) <= s["cg_max_iters"],
        "in [0, cg_max_iters]",
    )
    _check("cg_tol", s["cg_tol"], s["cg_tol"] > 0, "> 0")
    _check("warm_start", s["warm_start"], 0 <= s["warm_start"] <= 1, "in [0, 1]")
    _check("step_rule", s["step_rule"], s["step_rule"] in STEP_RULES, f"one of {STEP_RULES}")
    _check("combine", s["combine"], s["combine"] in COMBINE_RULES, f"one of {COMBINE_RULES}")
    k = s["combine_damping"]
    _check("combine_damping", k, 0 < k < math.inf, "> 0 and finite")
    _check("lr", s["lr"], s["lr"] > 0 and math.isfinite(s["lr"]), "a finite number > 0")
    _check("armijo_c", s["armijo_c"], 0 < s["armijo_c"] < 1, "in (0, 1)")
    _check("armijo_shrink", s["armijo_shrink"], 0 < s["armijo_shrink"] < 1, "in (0, 1)")
    tries = s["armijo_max_tries"]
    _check("armijo_max_tries", tries, int(tries) >= 1, "an integer >= 1")
    _check("damping_boost", s["damping_boost"], s["damping_boost"] > 1, "> 1")
    _check("damping_drop", s["damping_drop"], 0 < s["damping_drop"] < 1, "in (0, 1)")


class BlockDiagonalHF(torch.optim.Optimizer):
    """Block-diagonal Hessian-free optimization (BDHF).

    Each parameter group is one block (use ``bdhf_bench.curvature.partition`` and
    ``param_groups_from_blocks`` for one block per layer). ``step`` takes a ``ModelClosure``.
    Parameters with ``requires_grad=False`` take no part.

    As in torch.optim, the parameter groups hold the hyperparameters and every step reads them
    there: a learning-rate scheduler, a group's own setting and ``load_state_dict`` all take
    effect. The CG settings (``BLOCK_SETTINGS``) may differ between groups, i.e. between blocks;
    the settings of the whole step (``STEP_SETTINGS``, and ``damping`` in "global" mode) must be
    equal in every group.

    Args:
        params: parameters or parameter groups; each group is one block.
        curvature_fraction: the curvature sub-batch as a fraction of the mini-batch, in (0, 1],
            or "auto" (the default): per step, the whole mini-batch when it is at least 4 times
            the gradient noise scale, else a quarter (``noise_rules``; ``last_step``'s
            ``curvature_share`` and ``batch_over_noise`` record the choice).
        damping: Levenberg-Marquardt's initial lambda (``damping_start="fixed"``) or its factor
            over the curvature's scale (``"curvature"``, the default), in
            [damping_min, damping_max].
        damping_mode: "global" (one lambda from the combined step's rho) or "per_block".
        damping_start: "curvature" (lambda starts at ``damping`` times the GGN's Rayleigh
            quotient along the first step's gradient, per block in "per_block" mode: the same
            steps whatever the loss's scale, one block-diagonal product more) or "fixed" (at
            ``damping``). The default, "curvature" with factor 1, comes from a 3-seed sweep on
            the CI problems (docs/optimizers.md).
        damping_min, damping_max: lambda's range; every update is clamped to it.
        cg_max_iters, cg_min_iters, cg_tol: CG limits and Martens' progress tolerance.
        warm_start: decay of the previous CG solution used as the next start, in [0, 1].
        step_rule: "armijo" (backtracking line search) or "fixed" (``lr`` times the direction).
        lr: the fixed step length (``step_rule="fixed"``).
        armijo_c, armijo_shrink, armijo_max_tries: the line search.
        precondition: Martens' (diag of squared per-example gradients + lambda + l2)^0.75.
        backtrack: CG-backtracking over the iterates kept at ceil(5 * 1.3^j).
        rescale: correct the combined step with the full GGN (step 4); off: the plain block
            step, and rho against the block-diagonal model.
        combine: how ``rescale`` corrects it with more than one block and one lambda:
            "coefficients" (the default), a factor per block minimising the damped full-GGN
            model over the span of the block directions (one full product per block), or
            "scale", one factor along the summed step (one full product). With one block (HF)
            or per-block damping, "scale".
        combine_damping: the damping of the coefficients' system as a multiple of lambda (> 0).
            The default, 3, comes from a 10-seed comparison on the CI problems
            (docs/optimizers.md).
        damping_boost, damping_drop: lambda's factors for rho < 1/4 and rho > 3/4.
        cg_check_every, cg_compiled: how CG executes (``block_cg``'s ``check_every`` and
            ``compiled``), like torch.optim's ``foreach``: the same steps, so not
            hyperparameters and not in ``state_dict``.
    """

    single_block = False

    def __init__(
        self,
        params: Iterable[Any],
        *,
        curvature_fraction: float | str = "auto",
        damping: float = 1.0,
        damping_mode: str = "global",
        damping_start: str = "curvature",
        damping_min: float = DAMPING_RANGE[0],
        damping_max: float = DAMPING_RANGE[1],
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
        rescale: bool = True,
        combine: str = "coefficients",
        combine_damping: float = 3.0,
        damping_boost: float = 1.5,
        damping_drop: float = 2.0 / 3.0,
        cg_check_every: int = 1,
        cg_compiled: bool = False,
    ) -> None:
        if int(cg_check_every) < 1:
            raise ValueError(f"invalid cg_check_every={cg_check_every!r}: must be >= 1")
        defaults = {
            "curvature_fraction": _fraction_setting(curvature_fraction),
            "damping": float(damping),
            "damping_mode": damping_mode,
            "damping_start": damping_start,
            "damping_min": float(damping_min),
            "damping_max": float(damping_max),
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
            "rescale": bool(rescale),
            "combine": combine,
            "combine_damping": float(combine_damping),
            "damping_boost": float(damping_boost),
            "damping_drop": float(damping_drop),
        }
        _validate(defaults)
        super().__init__(params, defaults)
        self.totals: dict[str, float] = dict(ZERO_TOTALS)
        self.last_step = StepStats()
        self.noise: dict[str, float] = dict(ZERO_NOISE)
        """The moving averages behind ``curvature_fraction="auto"`` (``noise_rules``)."""
        self._layout: BlockLayout | None = None
        self._layout_key: tuple[tuple[int, ...], ...] = ()
        self._block_groups: list[list[int]] = []
        self._step: dict[str, Any] = {}
        self._block: dict[str, list[Any]] = {}
        self._settings_seen: tuple[Any, ...] = ()
        # the step's vectors (gradient, CG's, kept iterates), reused from step to step; not state
        self._workspace = Workspace()
        self.cg_check_every = int(cg_check_every)
        """CG reads its active-block mask every this many iterations (``block_cg``'s
        ``check_every``): how the step executes, not what it computes, so not a
        hyperparameter and not in ``state_dict``."""
        self.cg_compiled = bool(cg_compiled)
        """CG runs each iteration's vector work as one compiled function (``block_cg``'s
        ``compiled``, the GPU path): the same steps to rounding; not a hyperparameter."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._layout = None

    # -- blocks and settings -------------------------------------------------------------------

    def _trainable(self) -> list[list[Tensor]]:
        return [[p for p in g["params"] if p.requires_grad] for g in self.param_groups]

    def blocks(self) -> list[list[Tensor]]:
        """The blocks: one per parameter group (one in all for HessianFree), trainable only."""
        trainable = self._trainable()
        return [[p for i in gs for p in trainable[i]] for gs in self._groups_of_blocks()]

    def _groups_of_blocks(self) -> list[list[int]]:
        """Which parameter groups make up each block (groups without trainable tensors: none)."""
        used = [i for i, ps in enumerate(self._trainable()) if ps]
        if not used:
            raise ValueError(f"{type(self).__name__} has no parameter with requires_grad=True")
        return [used] if self.single_block else [[i] for i in used]

    def layout(self) -> BlockLayout:
        """The blocks' layout, rebuilt when the groups or the trainable tensors change."""
        key = tuple(tuple(id(p) for p in ps) for ps in self._trainable())
        if self._layout is None or key != self._layout_key:
            self._block_groups = self._groups_of_blocks()
            blocks = self.blocks()
            names = [
                self.param_groups[gs[0]].get("name", f"group{gs[0]}") if len(gs) == 1 else "all"
                for gs in self._block_groups
            ]
            self._layout = BlockLayout(blocks, names)
            self._layout_key = key
        return self._layout

    def _agreed(self, name: str, groups: list[int]) -> Any:
        values = [self.param_groups[i][name] for i in groups]
        if any(v != values[0] for v in values[1:]):
            scope = "one block" if name in BLOCK_SETTINGS else "the whole step"
            raise ValueError(
                f"{name} differs between parameter groups {groups} ({values}): in "
                f"{type(self).__name__} it is a setting of {scope}, so they must agree"
            )
        return values[0]

    def _read_settings(self) -> None:
        """The step's settings, read from the parameter groups (torch.optim's contract)."""
        layout = self.layout()
        names = tuple(k for k in self.defaults if k != "damping")  # damping: checked below
        seen = (id(layout), *(tuple(g.get(k) for k in names) for g in self.param_groups))
        if seen != self._settings_seen:
            self._check_settings(layout)
            self._settings_seen = seen
        lo, hi = self._step["damping_min"], self._step["damping_max"]
        for g in self.param_groups:
            _check("damping", g["damping"], lo <= g["damping"] <= hi, f"in [{lo:g}, {hi:g}]")
        if self._global_damping():
            self._agreed("damping", [i for gs in self._block_groups for i in gs])

    def _check_settings(self, layout: BlockLayout) -> None:
        """Range-check every group and collect the step's and the blocks' settings."""
        for group in self.param_groups:
            for name, value in self.defaults.items():
                group.setdefault(name, value)  # a state saved before a setting existed
            _validate(group)
        everyone = [i for gs in self._block_groups for i in gs]
        self._step = {name: self._agreed(name, everyone) for name in STEP_SETTINGS}
        self._block = {
            name: [self._agreed(name, gs) for gs in self._block_groups] for name in BLOCK_SETTINGS
        }
        assert len(self._block_groups) == layout.num_blocks

    @property
    def hp(self) -> dict[str, Any]:
        """The settings of the whole step, as the parameter groups hold them now."""
        self._read_settings()
        return dict(self._step)

    def _global_damping(self) -> bool:
        return self.single_block or self.param_groups[0]["damping_mode"] == "global"

    def _damping(self) -> list[float]:
        """Lambda per block."""
        groups = self._block_groups or self._groups_of_blocks()
        if self._global_damping():
            return [self.param_groups[groups[0][0]]["damping"]] * len(groups)
        return [self.param_groups[gs[0]]["damping"] for gs in groups]

    def _set_damping(self, values: list[float]) -> None:
        """Store lambda per block, clamped to [damping_min, damping_max]."""
        lo, hi = self._step["damping_min"], self._step["damping_max"]
        values = [min(max(v, lo), hi) for v in values]
        if self._global_damping():
            for g in self.param_groups:
                g["damping"] = values[0]
        else:
            for gs, v in zip(self._block_groups, values):
                for i in gs:
                    self.param_groups[i]["damping"] = v

    # -- the step ------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: ModelClosure) -> Tensor:  # type: ignore[override]
        """One HF step on the closure's mini-batch; returns the loss before the step."""
        if not isinstance(closure, ModelClosure):
            raise TypeError(
                f"{type(self).__name__}.step needs a bdhf_bench.optim.ModelClosure, "
                f"got {type(closure).__name__}"
            )
        self._read_settings()
        hp, layout = self._step, self.layout()
        known = {id(p) for p in closure.params}
        if any(id(p) not in known for p in layout.params):
            raise ValueError(
                "the closure's model does not own every trainable parameter of the optimizer"
            )
        passes0 = (closure.counts.forward, closure.counts.backward)
        stats = StepStats(damping=self._damping())
        self.last_step = stats

        ws = self._workspace
        f0 = closure()
        stats.loss = f0.item()
        like = layout.params[0]  # the dtype and device of the packed vectors
        g = layout.pack([p.grad for p in layout.params], out=ws.get("g", like, (layout.numel,)))
        theta0 = layout.unpack(
            layout.pack([p.detach() for p in layout.params], out=ws.get("theta0", g))
        )
        if not (math.isfinite(stats.loss) and all_finite(g)):
            self._finish(stats, closure, passes0, theta0, "nonfinite_loss")
            return f0

        ctx = closure.curvature(self._curvature_fraction(closure, layout, g, stats))
        stats.curvature_share = closure.curvature_share
        res = self._solve(closure, ctx, layout, g, stats)
        finite_x = all_finite(res.x)
        self._store_warm_start(layout, res.x, finite_x)
        if "nonfinite" in res.stop_reasons or not finite_x:
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
            # A zero direction (a zero gradient) says nothing about the model: lambda stays.
            damp = bool(d.any()) or not math.isfinite(gd)
            self._finish(stats, closure, passes0, theta0, "not_descent", damp, ctx)
            return f0

        combined = self._combine(closure, ctx, layout, theta0, g, d, gd, f_d, stats)
        if combined is None:
            self._finish(stats, closure, passes0, theta0, "nonfinite_curvature", ctx=ctx)
            return f0
        d, gd, f_d, stats.rho = combined
        self._update_damping(stats.rho)

        t = self._step_length(closure, layout, theta0, d, float(f0), gd, f_d, stats)
        if t is None:
            self._finish(stats, closure, passes0, theta0, "line_search_failed", False, ctx)
            return f0
        self._place(layout, theta0, d, t)
        stats.step_size = t * stats.scale
        self._finish(stats, closure, passes0, None, "accepted", False, ctx)
        return f0

    # -- pieces of the step --------------------------------------------------------------------

    def _curvature_fraction(
        self, closure: ModelClosure, layout: BlockLayout, g: Tensor, stats: StepStats
    ) -> float:
        """The step's curvature fraction: the fixed one, or with ``"auto"`` the one the
        gradient's noise scale calls for (``noise_rules``), from the moving averages of two
        estimates on the mini-batch's halves (half a gradient more per step)."""
        setting, n = self._step["curvature_fraction"], closure.batch_size
        if setting != "auto":
            return setting
        if n < 2:
            return AUTO_FRACTIONS[0]
        first = n // 2
        g_first = layout.pack(closure.prefix_gradient(first, layout.params))
        l2 = self._l2_gradient(closure, layout)
        data = g if l2 is None else torch.sub(g, l2, out=self._workspace.get("data", g))
        a, b = half_means(data, g_first, first, n, closure.loss.reduction)
        estimates = (signal_estimate(a, b), noise_estimate(a, b, first, n - first))
        signal, noise = torch.stack(estimates).tolist()  # one host read
        if math.isfinite(signal) and math.isfinite(noise):
            m, steps = self.noise, int(self.noise["steps"])
            m["signal"] = moving_average(m["signal"], signal, steps)
            m["noise"] = moving_average(m["noise"], noise, steps)
            m["steps"] = steps + 1
        if self.noise["steps"] == 0:
            return AUTO_FRACTIONS[0]
        stats.batch_over_noise = batch_over_noise(n, self.noise["signal"], self.noise["noise"])
        return auto_fraction(stats.batch_over_noise)

    def _l2_gradient(self, closure: ModelClosure, layout: BlockLayout) -> Tensor | None:
        """The L2 penalty's gradient ``c p``, packed (None without a penalty): ``g`` minus it
        is the loss's gradient."""
        coeff = {id(p): c for p, c in zip(closure.params, closure.l2)}
        if not any(coeff[id(p)] for p in layout.params):
            return None
        return layout.pack(
            [p.detach() * coeff[id(p)] for p in layout.params],
            out=self._workspace.get("l2_gradient", layout.params[0], (layout.numel,)),
        )

    def _solve(
        self,
        closure: ModelClosure,
        ctx: GGNContext,
        layout: BlockLayout,
        g: Tensor,
        stats: StepStats,
    ) -> CGResult:
        """CG on every block's damped system ``(G_bb + lambda_b I) d_b = -g_b`` (lambda set
        from the curvature first on a curvature start's first step); its counts go to
        ``stats``."""
        hp, blk, ws = self._step, self._block, self._workspace
        start_products = 0
        if hp["damping_start"] == "curvature" and self.totals["steps"] == 0:
            self._set_damping(self._curvature_damping(ctx, layout, g))
            start_products = 1
        lam = self._damping()
        precond = self._preconditioner(closure, layout, lam) if hp["precondition"] else None
        # every CG product is written into one buffer: no vector per call
        blocks = GGNOperator(ctx, layout, out=ws.get("product", g)).block_diagonal()
        res = block_cg(
            blocks,
            torch.neg(g, out=ws.get("minus_g", g)),
            lam,
            x0=self._warm_start(layout),
            max_iters=blk["cg_max_iters"],
            min_iters=blk["cg_min_iters"],
            tol=blk["cg_tol"],
            preconditioner=precond,
            keep_iterates=hp["backtrack"],
            check_every=self.cg_check_every,
            compiled=self.cg_compiled,
            workspace=ws,
        )
        stats.cg_iterations = res.iterations
        stats.cg_stop_reasons = res.stop_reasons
        stats.block_products = [n + start_products for n in res.block_products]
        return res

    def _preconditioner(self, closure: ModelClosure, layout: BlockLayout, lam: list[float]):
        """Martens' ``(D + lambda + l2)^0.75``, D the squared per-example gradients' diagonal."""
        coeff = {id(p): c for p, c in zip(closure.params, closure.l2)}
        diag = squared_gradient_diagonal(closure, layout)
        l2 = layout.pack([torch.full_like(p, coeff[id(p)]) for p in layout.params])
        precond = diag.add_(l2)
        for (lo, hi), lam_b in zip(layout.block_bounds, lam):
            precond[lo:hi] += lam_b
        return precond.pow_(0.75)

    def _curvature_damping(self, ctx: GGNContext, layout: BlockLayout, g: Tensor) -> list[float]:
        """The first lambda from the curvature: ``damping`` times ``g'Gg / g'g`` (per block, or
        pooled over the blocks in global mode), from one block-diagonal product."""
        gg = GGNOperator(ctx, layout).block_diagonal() @ g
        quotients = rayleigh_quotients(
            layout.block_dot(g, gg).tolist(),
            layout.block_dot(g, g).tolist(),
            pooled=self._global_damping(),
        )
        hp = self._step
        return curvature_damping(self._damping(), quotients, hp["damping_min"], hp["damping_max"])

    def _warm_start(self, layout: BlockLayout) -> Tensor | None:
        """``warm_start`` (per block) times the previous step's final CG iterate."""
        decay = self._block["warm_start"]
        prev = [self.state[p].get("cg_solution") for p in layout.params]
        if not any(decay) or any(v is None for v in prev):
            return None
        x0 = layout.pack(prev, out=self._workspace.get("x0", prev[0], (layout.numel,)))
        if len(set(decay)) == 1:
            return x0.mul_(decay[0])
        for (lo, hi), c in zip(layout.block_bounds, decay):
            x0[lo:hi] *= c
        return x0

    def _store_warm_start(self, layout: BlockLayout, x: Tensor, finite: bool) -> None:
        for p, v in zip(layout.params, layout.unpack(x)):
            kept = self.state[p].get("cg_solution")
            if not finite:
                self.state[p]["cg_solution"] = torch.zeros_like(p)
            elif kept is not None and kept.shape == v.shape and kept.dtype == v.dtype:
                kept.copy_(v)  # into the last step's tensor: memory already mapped
            else:
                self.state[p]["cg_solution"] = v.clone()

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

    def _combine(
        self,
        closure: ModelClosure,
        ctx: GGNContext,
        layout: BlockLayout,
        theta0: list[Tensor],
        g: Tensor,
        d: Tensor,
        gd: float,
        f_d: float | None,
        stats: StepStats,
    ) -> tuple[Tensor, float, float | None, list[float]] | None:
        """The step's direction from the block solutions ``d``, its ``g.d``, the objective at
        its end if known, and rho (None when the curvature along it is not finite)."""
        hp = self._step
        if (
            hp["rescale"]
            and hp["combine"] == "coefficients"
            and layout.num_blocks > 1
            and self._global_damping()
        ):
            return self._coefficients_and_rho(closure, ctx, layout, theta0, g, d, stats)
        scaled = self._scale_and_rho(closure, ctx, layout, theta0, g, d, stats)
        if scaled is None:
            return None
        alpha, rho = scaled
        stats.scale = alpha
        if alpha != 1.0:
            # f_d belongs to d, not to alpha d: never reuse it for the rescaled direction
            d, gd, f_d = torch.mul(d, alpha, out=self._workspace.get("scaled", d)), gd * alpha, None
        return d, gd, f_d, rho

    def _coefficients_and_rho(
        self,
        closure: ModelClosure,
        ctx: GGNContext,
        layout: BlockLayout,
        theta0: list[Tensor],
        g: Tensor,
        d: Tensor,
        stats: StepStats,
    ) -> tuple[Tensor, float, None, list[float]] | None:
        """``s = sum_b a_b d_b`` with the block coefficients of ``hf_rules``: the Gram matrix
        ``D'GD`` of the block directions from one full product per block, damped with
        ``combine_damping`` times lambda, then rho of ``s`` against the undamped full-GGN
        model, measured on the curvature sub-batch.

        Each block's solution ignores how the others move the outputs; the coefficients put
        that coupling back along the directions already found (as K-FAC rescales its update
        with the exact GGN), so the step costs no more CG."""
        ws = self._workspace
        f_c0 = float(ctx.loss_value())
        full = GGNOperator(ctx, layout, out=ws.get("full_product", d))
        columns = [
            layout.block_dot(d, full @ self._one_block(d, lo, hi)) for lo, hi in layout.block_bounds
        ]
        stats.full_products += layout.num_blocks
        gram = torch.stack(columns, dim=1).double()
        if not bool(torch.isfinite(gram).all()):
            return None
        gram = 0.5 * (gram + gram.T)  # symmetric up to rounding
        gd_blocks = layout.block_dot(g, d).double()
        norms = layout.block_dot(d, d).double()
        damping = self._step["combine_damping"] * self._damping()[0]
        coefficients = block_coefficients(gram, gd_blocks, norms, damping)
        if not bool(torch.isfinite(coefficients).all()):
            return None
        s = ws.get("scaled", d)
        for (lo, hi), a in zip(layout.block_bounds, coefficients.to(d.dtype)):
            torch.mul(d[lo:hi], a, out=s[lo:hi])
        stats.block_coefficients = coefficients.tolist()
        predicted = float(span_reduction(coefficients, gd_blocks, gram))
        self._place(layout, theta0, s, 1.0)
        actual = float(closure.evaluate("curvature")) - f_c0
        self._restore(layout, theta0)
        return s, float(coefficients @ gd_blocks), None, [reduction_ratio(actual, predicted)]

    def _scale_and_rho(
        self,
        closure: ModelClosure,
        ctx: GGNContext,
        layout: BlockLayout,
        theta0: list[Tensor],
        g: Tensor,
        d: Tensor,
        stats: StepStats,
    ) -> tuple[float, list[float]] | None:
        """The step scale ``alpha`` and rho = actual / predicted reduction of ``alpha d``
        (None when the curvature along ``d`` is not finite).

        As in Martens' code the model has no damping, the actual reduction is measured on the
        curvature sub-batch, and ``rho = -inf`` when the objective went up. In per-block mode a
        block whose direction is zero predicts no change: its rho is NaN (no information) and
        its objective is not evaluated. Without ``rescale``, ``alpha = 1`` and the global model
        is the block-diagonal one (``sum_b d_b^T G_bb d_b``): no full product is made.
        """
        f_c0 = float(ctx.loss_value())
        gd_blocks = layout.block_dot(g, d)
        gd = float(gd_blocks.sum())
        alpha, dgd = 1.0, math.nan
        if self._step["rescale"]:
            full = GGNOperator(ctx, layout, out=self._workspace.get("full_product", d)) @ d
            dgd = float(torch.dot(d, full))
            stats.full_products += 1
            if not math.isfinite(dgd):
                return None
            alpha = step_scale(gd, dgd)
        dgd_blocks = None
        if not (self._global_damping() and self._step["rescale"]):
            dgd_blocks = layout.block_dot(d, GGNOperator(ctx, layout).block_diagonal() @ d)
            stats.block_products = [n + 1 for n in stats.block_products]
            if not bool(torch.isfinite(dgd_blocks).all()):
                return None
        if self._global_damping():
            model_dgd = dgd if dgd_blocks is None else float(dgd_blocks.sum())
            predicted = [predicted_reduction(alpha, gd, model_dgd)]
            self._place(layout, theta0, d, alpha)
            actual = [float(closure.evaluate("curvature")) - f_c0]
        else:
            assert dgd_blocks is not None
            predicted = predicted_reduction(alpha, gd_blocks, dgd_blocks).tolist()
            actual = []
            for (lo, hi), p in zip(layout.block_bounds, predicted):
                if p == 0:
                    actual.append(0.0)
                    continue
                self._place(layout, theta0, self._one_block(d, lo, hi), alpha)
                actual.append(float(closure.evaluate("curvature")) - f_c0)
        self._restore(layout, theta0)
        rho = [reduction_ratio(a, p) for a, p in zip(actual, predicted)]
        return alpha, rho

    def _one_block(self, d: Tensor, lo: int, hi: int) -> Tensor:
        """``d`` on the block ``[lo, hi)`` and zero elsewhere, in the workspace."""
        only = self._workspace.get("one_block", d).zero_()
        only[lo:hi] = d[lo:hi]
        return only

    def _update_damping(self, rho: list[float]) -> None:
        """Levenberg-Marquardt per block; NaN (no information) keeps lambda; then the clamp."""
        boost, drop = self._step["damping_boost"], self._step["damping_drop"]
        lam = self._damping()
        if len(rho) == 1:
            rho = rho * len(lam)
        self._set_damping([levenberg_marquardt(v, r, boost, drop) for r, v in zip(rho, lam)])

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
        hp = self._step
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
            if armijo_accepts(f, f0, hp["armijo_c"], t, gd):
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
                self._set_damping([v * self._step["damping_boost"] for v in self._damping()])
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
        sd["hf"] = {
            "totals": dict(self.totals),
            "last_step": asdict(self.last_step),
            "noise": dict(self.noise),
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("hf", None)
        super().load_state_dict(state_dict)
        if extra is not None:
            self.totals = dict(extra["totals"])
            self.last_step = StepStats(**extra["last_step"])
            self.noise = dict(extra.get("noise", ZERO_NOISE))  # a state saved before "auto"
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
