"""The full GGN product on a DeepOBS-sized net against curvlinops' GGNLinearOperator."""

from __future__ import annotations

import curvlinops  # the dev extra installs it: a missing oracle is a failure, not a skip
import pytest
import torch
from torch import nn

from bdhf_bench.curvature import GGNContext


@pytest.mark.parametrize("net", ["mnist_mlp", "cifar10_3c3d"])
def test_full_product_matches_curvlinops(net):
    from deepobs.pytorch.testproblems import testproblems_modules as tm

    torch.manual_seed(0)
    if net == "mnist_mlp":
        model = tm.net_mlp(num_outputs=10).double()
        x = torch.rand(16, 1, 28, 28, dtype=torch.float64)
    else:
        model = tm.net_cifar10_3c3d(num_outputs=10).double()
        x = torch.rand(8, 3, 32, 32, dtype=torch.float64)
    y = torch.randint(0, 10, (x.shape[0],))
    params = [p for p in model.parameters() if p.requires_grad]
    op = curvlinops.GGNLinearOperator(
        model, nn.CrossEntropyLoss(), params, [(x, y)], check_deterministic=False
    )
    v = torch.randn(sum(p.numel() for p in params), dtype=torch.float64)
    ref = op @ v
    ctx = GGNContext.from_model(model, x, y, nn.CrossEntropyLoss())
    parts = v.split([p.numel() for p in params])
    ours = torch.cat(
        [g.reshape(-1) for g in ctx.mvp([t.view_as(p) for t, p in zip(parts, params)])]
    )
    torch.testing.assert_close(ours, torch.as_tensor(ref), rtol=1e-9, atol=1e-12 * ref.abs().max())
