"""HF's step decisions, each formula alone against its closed form (Martens 2010)."""

from __future__ import annotations

import math

import pytest
import torch

from bdhf_bench.optim.hf_rules import (
    armijo_accepts,
    block_coefficients,
    levenberg_marquardt,
    predicted_reduction,
    reduction_ratio,
    span_reduction,
    step_scale,
)


def test_step_scale_is_the_model_minimiser_capped_at_one():
    # q(a) = a g.d + a^2 dGd / 2 is least at a = -g.d / dGd
    assert step_scale(-2.0, 4.0) == 0.5
    assert step_scale(-8.0, 4.0) == 1.0  # never longer than the direction
    assert step_scale(-2.0, 0.0) == 1.0 and step_scale(-2.0, -1.0) == 1.0


def _blocks_problem(seed=0, sizes=(3, 2, 4)):
    """A dense SPD G, a gradient g, and block solutions d_b of (G_bb + lam) d_b = -g_b."""
    gen = torch.Generator().manual_seed(seed)
    n, lam = sum(sizes), 0.3
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    big, g = a @ a.T / n, torch.randn(n, generator=gen, dtype=torch.float64)
    columns, lo = torch.zeros(n, len(sizes), dtype=torch.float64), 0
    for b, k in enumerate(sizes):
        part = slice(lo, lo + k)
        system = big[part, part] + lam * torch.eye(k, dtype=torch.float64)
        columns[part, b] = torch.linalg.solve(system, -g[part])
        lo += k
    return big, g, columns, lam


def test_block_coefficients_minimise_the_damped_model_over_the_span():
    big, g, d, lam = _blocks_problem()
    gram, gd, norms = d.T @ big @ d, d.T @ g, (d * d).sum(0)
    a = block_coefficients(gram, gd, norms, lam)

    def damped(c):  # the damped model at the step d c, from the dense matrices
        s = d @ c
        return float(g @ s + 0.5 * s @ big @ s + 0.5 * lam * s @ s)

    gen = torch.Generator().manual_seed(5)
    for _ in range(20):  # no nearby combination is lower
        other = a + 1e-3 * torch.randn(3, generator=gen, dtype=torch.float64)
        assert damped(a) < damped(other)
    assert float((a - 1).abs().max()) > 0.05  # these blocks couple


def test_uncoupled_blocks_keep_their_solutions_and_a_zero_direction_gets_zero():
    big, g, d, lam = _blocks_problem()
    sizes, lo = (3, 2, 4), 0
    decoupled = torch.zeros_like(big)
    for k in sizes:
        decoupled[lo : lo + k, lo : lo + k] = big[lo : lo + k, lo : lo + k]
        lo += k
    gram, gd, norms = d.T @ decoupled @ d, d.T @ g, (d * d).sum(0)
    torch.testing.assert_close(block_coefficients(gram, gd, norms, lam), torch.ones(3).double())
    d[:, 1] = 0.0
    gram, gd, norms = d.T @ big @ d, d.T @ g, (d * d).sum(0)
    a = block_coefficients(gram, gd, norms, lam)
    assert a[1] == 0.0 and bool(torch.isfinite(a).all())


def test_a_singular_coefficient_system_gives_nans_instead_of_raising():
    gram = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    gd, norms = torch.tensor([-1.0, -1.0], dtype=torch.float64), torch.ones(2).double()
    assert bool(torch.isnan(block_coefficients(gram, gd, norms, 0.0)).all())
    assert bool(torch.isfinite(block_coefficients(gram, gd, norms, 0.5)).all())


def test_span_reduction_is_the_undamped_model_at_the_combined_step():
    big, g, d, _ = _blocks_problem(seed=2)
    a = torch.tensor([0.7, 1.3, -0.2], dtype=torch.float64)
    s = d @ a
    expected = float(g @ s + 0.5 * s @ big @ s)
    assert float(span_reduction(a, d.T @ g, d.T @ big @ d)) == pytest.approx(expected, rel=1e-12)


def test_predicted_reduction_is_the_quadratic_model_elementwise_on_tensors():
    assert predicted_reduction(0.5, -2.0, 4.0) == 0.5 * -2.0 + 0.125 * 4.0
    blocks = predicted_reduction(2.0, torch.tensor([-1.0, -3.0]), torch.tensor([0.5, 1.0]))
    assert blocks.tolist() == [2.0 * -1.0 + 2.0 * 0.5, 2.0 * -3.0 + 2.0 * 1.0]


@pytest.mark.parametrize(
    ("actual", "predicted", "rho"),
    [
        (-1.0, -2.0, 0.5),
        (-3.0, -2.0, 1.5),  # better than predicted
        (0.5, -2.0, -math.inf),  # the objective went up
        (math.nan, -2.0, -math.inf),  # not finite
        (-1.0, 1.0, -math.inf),  # the model predicted an increase
    ],
)
def test_reduction_ratio(actual, predicted, rho):
    assert reduction_ratio(actual, predicted) == rho


def test_a_zero_prediction_carries_no_information():
    assert math.isnan(reduction_ratio(-1.0, 0.0))


@pytest.mark.parametrize(
    ("rho", "lam"),
    [(0.1, 1.5), (0.25, 1.0), (0.5, 1.0), (0.75, 1.0), (0.9, 2.0 / 3.0), (-math.inf, 1.5)],
)
def test_levenberg_marquardt_thresholds(rho, lam):
    assert levenberg_marquardt(1.0, rho, 1.5, 2.0 / 3.0) == lam


def test_levenberg_marquardt_keeps_lambda_without_information():
    assert levenberg_marquardt(3.0, math.nan, 1.5, 2.0 / 3.0) == 3.0


def test_armijo_sufficient_decrease():
    # f0 = 1, c = 0.01, t = 0.5, g.d = -2: accept f <= 1 - 0.01
    assert armijo_accepts(0.99, 1.0, 0.01, 0.5, -2.0)
    assert not armijo_accepts(0.995, 1.0, 0.01, 0.5, -2.0)
    assert not armijo_accepts(math.nan, 1.0, 0.01, 0.5, -2.0)
