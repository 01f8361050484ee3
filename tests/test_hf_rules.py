"""HF's step decisions, each formula alone against its closed form (Martens 2010)."""

from __future__ import annotations

import math

import pytest
import torch

from bdhf_bench.optim.hf_rules import (
    armijo_accepts,
    levenberg_marquardt,
    predicted_reduction,
    reduction_ratio,
    step_scale,
)


def test_step_scale_is_the_model_minimiser_capped_at_one():
    # q(a) = a g.d + a^2 dGd / 2 is least at a = -g.d / dGd
    assert step_scale(-2.0, 4.0) == 0.5
    assert step_scale(-8.0, 4.0) == 1.0  # never longer than the direction
    assert step_scale(-2.0, 0.0) == 1.0 and step_scale(-2.0, -1.0) == 1.0


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
