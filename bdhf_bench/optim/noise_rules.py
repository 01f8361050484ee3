"""The automatic curvature fraction, one formula per function: how noisy the mini-batch gradient
is, from its two halves, and which curvature sub-batch that calls for.

The gradient noise scale (McCandlish, Kaplan, Amodei et al. 2018, "An empirical model of
large-batch training") is ``B_noise = tr(Sigma) / |G|^2``: the per-example gradient covariance
over the squared true gradient. A batch much larger than ``B_noise`` has a nearly exact
gradient and its step is limited by curvature; a batch near or below it is limited by noise,
where preconditioning gains little (Zhang, Li, Nado et al. 2019, "Which algorithmic choices
matter at which batch sizes?"). Two halves ``a`` and ``b`` of one mini-batch give both parts:
``E[a.b] = |G|^2`` and ``E|a - b|^2 = tr(Sigma) (1/n_a + 1/n_b)``. Both hold for examples
that enter the loss independently; under BatchNorm in training mode the first half's gradient
uses that half's batch statistics, and the estimates are approximate.

HF and BDHF fit the curvature sub-batch's GGN. When the gradient is nearly exact, a GGN from
the whole mini-batch makes better steps (the paper autoencoder: 30-50 updates to its target,
against 160-170 for BDHF with a quarter, and none within 60 for HF); when noise dominates,
it fits each step to its own batch and undoes the others (the MNIST-1D MLP misses its target
with it), and a quarter's GGN, with the higher damping Levenberg-Marquardt settles at, makes
the better steps. The threshold, ``B >= 4 B_noise`` (the gradient's noise at most half its
signal, in norm), is ours: chosen on the CI and paper problems (docs/optimizers.md). In terms
of two equal halves' agreement ``c = a.b / ((|a|^2 + |b|^2) / 2)``, whose expectation is
``r / (r + 2)`` at ``r = B / B_noise``, it is ``c >= 2/3``. At the evaluations of the runs
that chose it, ``c`` stayed at or under 0.50 on the MNIST-1D MLP (10 seeds); on the paper
autoencoder (3 seeds) it stayed above 0.92 for HF and fell to 0.67, the threshold, by BDHF's
50th update on one seed: the noise scale grows as the loss falls.
"""

from __future__ import annotations

from torch import Tensor

AUTO_FRACTIONS = (0.25, 1.0)
"""The curvature fraction when noise dominates (the paper's quarter) and when it does not."""

NOISE_MULTIPLE = 4.0
"""The whole mini-batch is the curvature batch once the batch is this many times ``B_noise``."""

NOISE_DECAY = 0.9
"""The exponential moving averages' decay of the two estimates, per step."""


def half_means(
    data_gradient: Tensor, first_half: Tensor, first: int, total: int, reduction: str
) -> tuple[Tensor, Tensor]:
    """The mean per-example gradients of the first ``first`` examples and of the rest, from the
    whole batch's loss gradient and the first part's (both without L2). A ``"sum"`` loss adds
    the examples' gradients; the means (``"mean"``, ``"batch_mean"``) weight each by 1 / rows."""
    rest = total - first
    if reduction == "sum":
        return first_half / first, (data_gradient - first_half) / rest
    return first_half, (total * data_gradient - first * first_half) / rest


def signal_estimate(a: Tensor, b: Tensor) -> Tensor:
    """``a . b``: unbiased for ``|G|^2`` when the halves hold different examples (a 0-d
    tensor on the vectors' device: the step reads both estimates in one go)."""
    return a @ b


def noise_estimate(a: Tensor, b: Tensor, n_a: int, n_b: int) -> Tensor:
    """``|a - b|^2 / (1/n_a + 1/n_b)``: unbiased for ``tr(Sigma)`` (a 0-d tensor)."""
    return (a - b).square().sum() / (1.0 / n_a + 1.0 / n_b)


def moving_average(average: float, value: float, steps: int) -> float:
    """The exponential moving average after ``steps`` values (the first value starts it)."""
    return value if steps == 0 else NOISE_DECAY * average + (1.0 - NOISE_DECAY) * value


def batch_over_noise(batch: int, signal: float, noise: float) -> float:
    """``B / B_noise = B |G|^2 / tr(Sigma)``; 0 when the signal estimate is not positive (the
    halves disagree: all noise), inf when there is no noise."""
    if not signal > 0:
        return 0.0
    return batch * signal / noise if noise > 0 else float("inf")


def auto_fraction(ratio: float) -> float:
    """The curvature fraction for ``r = B / B_noise``: the whole batch from ``NOISE_MULTIPLE``
    on, a quarter below."""
    return AUTO_FRACTIONS[1] if ratio >= NOISE_MULTIPLE else AUTO_FRACTIONS[0]
