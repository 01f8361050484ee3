"""The optimizer registry: built-in entries, schemas, grids, hyperparameter checks, plugins."""

from __future__ import annotations

import importlib.metadata
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from bdhf_bench.curvature import CrossEntropy
from bdhf_bench.optim import (
    DEEPOBS_LR_GRID,
    BlockDiagonalHF,
    HessianFree,
    HyperParameter,
    ModelClosure,
    OptimizerEntry,
    get_optimizer,
    optimizer_names,
)
from bdhf_bench.optim import registry as reg


def test_builtin_entries():
    assert {"bdhf", "hf", "adam", "sgd", "momentum"} <= set(optimizer_names())
    assert get_optimizer("bdhf").optimizer_class is BlockDiagonalHF
    assert get_optimizer("hf").optimizer_class is HessianFree
    assert get_optimizer("momentum").hyperparameters["momentum"].default == 0.99
    assert get_optimizer("adam").schema()["lr"] == {"type": float, "default": 1e-3}
    assert get_optimizer("hf").resolve()["cg_max_iters"] == 250


def test_deepobs_learning_rate_grid():
    assert len(DEEPOBS_LR_GRID) == 36
    np.testing.assert_allclose(DEEPOBS_LR_GRID, np.logspace(-5, 2, 36), rtol=1e-5)
    for name in ("adam", "sgd", "momentum"):
        assert get_optimizer(name).grid["lr"] == DEEPOBS_LR_GRID


def test_resolve_types_and_checks():
    entry = get_optimizer("bdhf")
    hp = entry.resolve({"damping": "0.5", "cg_max_iters": "20", "precondition": "true"})
    assert hp["damping"] == 0.5 and hp["cg_max_iters"] == 20 and hp["precondition"] is True
    with pytest.raises(
        ValueError, match=r"unknown hyperparameter of bdhf 'dampning' \(did you mean damping"
    ):
        entry.resolve({"dampning": 1.0})
    with pytest.raises(
        ValueError, match=r"damping='abc' is not valid: must be a float in \[1e-12, 1e\+12\]"
    ):
        entry.resolve({"damping": "abc"})
    with pytest.raises(
        ValueError, match=r"curvature_fraction=1.5 is out of range: must be a float in \(0, 1\]"
    ):
        entry.resolve({"curvature_fraction": 1.5})
    with pytest.raises(ValueError, match=r"cg_max_iters=2.5 is not valid: must be an int"):
        entry.resolve({"cg_max_iters": 2.5})
    with pytest.raises(
        ValueError,
        match=r"blocks='layer' is not valid: unknown block scheme 'layer'; valid: module",
    ):
        entry.resolve({"blocks": "layer"})


def test_unknown_optimizer_suggests_close_names():
    with pytest.raises(
        ValueError, match=r"unknown optimizer 'adma' \(did you mean adam, sfadamw\?\)"
    ):
        get_optimizer("adma")


def test_bdhf_entry_builds_one_block_per_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = get_optimizer("bdhf").build(model, {"blocks": "module"})
    assert [len(b) for b in opt.blocks()] == [2, 2]
    assert opt.layout().names == ["0", "2"]
    assert len(get_optimizer("bdhf").build(model, {"blocks": "tensor"}).blocks()) == 4
    assert len(get_optimizer("hf").build(model).blocks()) == 1


class _Sign(torch.optim.Optimizer):
    """A toy third-party optimizer: signSGD."""

    def __init__(self, params, lr=0.01):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure):
        loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad.sign(), alpha=-group["lr"])
        return loss


def _sign_entry():
    return OptimizerEntry(
        "signsgd",
        "sign of the gradient (plugin test)",
        _Sign,
        {"lr": HyperParameter(float, 0.01, low=0.0, low_open=True)},
        lambda model, hp: _Sign(model.parameters(), lr=hp["lr"]),
        grid={"lr": [0.01, 0.1]},
        step_protocol="closure",
    )


def test_entry_point_plugin_is_listed_and_runnable(monkeypatch):
    ep = importlib.metadata.EntryPoint(
        name="signsgd", value="tests_plugin:entry", group="bdhf_bench.optimizers"
    )
    monkeypatch.setattr(ep.__class__, "load", lambda self: _sign_entry)
    real = importlib.metadata.entry_points

    def fake(**kwargs):
        if kwargs.get("group") == "bdhf_bench.optimizers":
            return [ep]
        return real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    monkeypatch.setattr(reg, "_plugins_loaded", False)
    monkeypatch.setattr(reg, "_REGISTRY", dict(reg._REGISTRY))
    assert "signsgd" in optimizer_names()
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    before = model.weight.detach().clone()
    opt = get_optimizer("signsgd").build(model, {"lr": "0.1"})
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    opt.step(ModelClosure(model, CrossEntropy(), x, y))
    assert torch.allclose((model.weight - before).abs(), torch.full_like(before, 0.1))


def test_broken_plugin_is_skipped_with_a_warning(monkeypatch):
    ep = importlib.metadata.EntryPoint(name="bad", value="x:y", group="bdhf_bench.optimizers")
    monkeypatch.setattr(ep.__class__, "load", lambda self: (_ for _ in ()).throw(ImportError("no")))
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: [ep])
    monkeypatch.setattr(reg, "_plugins_loaded", False)
    monkeypatch.setattr(reg, "_REGISTRY", dict(reg._REGISTRY))
    with pytest.warns(UserWarning, match="skipping bdhf_bench.optimizers entry point 'bad'"):
        names = optimizer_names()
    assert "bad" not in names and "bdhf" in names


def test_a_plugin_named_like_a_built_in_is_skipped_with_a_warning(monkeypatch):
    """A plugin entry called "adam" neither replaces Adam nor vanishes without a word."""
    ep = importlib.metadata.EntryPoint(name="adam", value="x:y", group="bdhf_bench.optimizers")
    impostor = replace(_sign_entry(), name="adam")
    monkeypatch.setattr(ep.__class__, "load", lambda self: impostor)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: [ep])
    monkeypatch.setattr(reg, "_plugins_loaded", False)
    monkeypatch.setattr(reg, "_REGISTRY", dict(reg._REGISTRY))
    with pytest.warns(UserWarning, match="skipping the bdhf_bench.optimizers plugin entry 'adam'"):
        names = optimizer_names()
    assert "adam" in names and get_optimizer("adam") is not impostor


def test_hf_and_bdhf_defaults_are_the_constructors():
    """One source of HF's defaults: every registry default of bdhf and hf that the optimizer
    takes is its constructor's (a subclass's default over its base's)."""
    from bdhf_bench.optim import BlockDiagonalHF, HessianFree

    for name, cls in (("bdhf", BlockDiagonalHF), ("hf", HessianFree)):
        defaults = reg.constructor_defaults(cls)
        resolved = get_optimizer(name).resolve({})
        shared = set(resolved) & set(defaults)
        assert len(shared) >= 12
        assert {k: resolved[k] for k in shared} == {k: defaults[k] for k in shared}
    assert reg.constructor_defaults(HessianFree)["cg_max_iters"] == 250
    assert reg.constructor_defaults(BlockDiagonalHF)["cg_max_iters"] == 50
