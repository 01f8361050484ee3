"""Bad input to the curvature engine: a ValueError that says what is wrong."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bdhf_bench.curvature import (
    MSE,
    BlockLayout,
    ConvexOutputLoss,
    CrossEntropy,
    GGNContext,
    as_output_loss,
    partition,
)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def test_partition_that_misses_a_parameter():
    with pytest.raises(ValueError, match=r"parameters in no block: 2\.bias"):
        partition(_mlp(), {"a": ["0.*"], "b": ["2.weight"]})


def test_partition_that_repeats_a_parameter():
    with pytest.raises(ValueError, match="matches blocks"):
        partition(_mlp(), {"a": ["0.*", "2.*"], "b": ["2.*"]})
    model = _mlp()
    w = model[0].weight
    with pytest.raises(ValueError, match="in two blocks"):
        BlockLayout([[w], [w, model[0].bias]])


def test_layout_that_misses_a_parameter():
    model = _mlp()
    with pytest.raises(ValueError, match="parameters in no block"):
        BlockLayout([[model[0].weight]], all_params=list(model.parameters()))


def test_unknown_scheme_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid: module, tensor, all"):
        partition(_mlp(), "layers")


def test_default_partition_groups_modules_and_rnn_layers():
    model = nn.ModuleDict(
        {"lin": nn.Linear(3, 4), "bn": nn.BatchNorm1d(4), "rnn": nn.LSTM(4, 5, num_layers=2)}
    )
    names = [b.name for b in partition(model)]
    sizes = [len(b.params) for b in partition(model)]
    assert names == ["lin", "bn", "rnn.l0", "rnn.l1"]
    assert sizes == [2, 2, 4, 4]


def test_losses_the_engine_cannot_handle():
    with pytest.raises(ValueError, match="cannot form the output-space Hessian of L1Loss"):
        as_output_loss(nn.L1Loss())
    with pytest.raises(ValueError, match="label smoothing"):
        as_output_loss(nn.CrossEntropyLoss(label_smoothing=0.1))
    with pytest.raises(ValueError, match="reduction must be one of"):
        as_output_loss(nn.MSELoss(reduction="none"))
    assert isinstance(as_output_loss(nn.MSELoss(reduction="sum")), MSE)


def test_nonfinite_vector_and_mismatched_shapes():
    model = _mlp()
    x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    ctx = GGNContext.from_model(model, x, y, nn.CrossEntropyLoss())
    params = list(model.parameters())
    bad = [torch.zeros_like(p) for p in params]
    bad[1][0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        ctx.mvp(bad)
    with pytest.raises(ValueError, match="expected 4 tensors"):
        ctx.mvp([torch.zeros_like(p) for p in params[:3]])
    wrong = [torch.zeros_like(p) for p in params]
    wrong[0] = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="for parameter"):
        ctx.mvp(wrong)
    with pytest.raises(ValueError, match="output-space direction"):
        ctx.output_hessian([torch.zeros(5, 3)])


def test_outputs_without_graph_and_wrong_l2():
    model = _mlp()
    x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    with torch.no_grad():
        out = model(x)
    with pytest.raises(ValueError, match="autograd enabled"):
        GGNContext(out, y, list(model.parameters()), CrossEntropy())
    with pytest.raises(ValueError, match="one coefficient per parameter"):
        GGNContext(model(x), y, list(model.parameters()), CrossEntropy(), l2=[0.1])


def test_closed_form_hessians_match_autograd():
    torch.manual_seed(3)
    z = torch.randn(4, 3, 2, dtype=torch.float64)
    cases = [
        (CrossEntropy("mean"), torch.randint(0, 3, (4, 2))),
        (CrossEntropy("batch_mean"), torch.randint(0, 3, (4, 2))),
        (MSE("sum"), torch.randn(4, 3, 2, dtype=torch.float64)),
        (ConvexOutputLoss(lambda o, t: (o - t).pow(4).sum() / o.shape[0]), torch.zeros_like(z)),
        # torch's mse_loss has no forward-over-reverse ("ZeroTensors are immutable", torch 2.14)
        (ConvexOutputLoss(lambda o, t: F.mse_loss(o, t)), torch.randn_like(z)),
    ]
    from bdhf_bench.curvature import BCEWithLogits

    cases.append((BCEWithLogits("mean"), (torch.rand(4, 3, 2) > 0.5).double()))
    for loss, t in cases:
        hess = torch.autograd.functional.hessian(lambda q, f=loss, t=t: f(q, t), z)
        hess = hess.reshape(z.numel(), -1)
        v = torch.randn_like(z)
        (hv,) = loss.prepare(z, t).matvec((v,))
        torch.testing.assert_close(hv.reshape(-1), hess @ v.reshape(-1))
