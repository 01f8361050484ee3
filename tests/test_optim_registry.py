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
        ValueError,
        match=r"curvature_fraction=1.5 is out of range: must be 'auto' or a float in \(0, 1\]",
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
    bdhf, hf = get_optimizer("bdhf"), get_optimizer("hf")
    opt = bdhf.build(model, bdhf.resolve({"blocks": "module"}))
    assert [len(b) for b in opt.blocks()] == [2, 2]
    assert opt.layout().names == ["0", "2"]
    assert len(bdhf.build(model, bdhf.resolve({"blocks": "tensor"})).blocks()) == 4
    assert len(hf.build(model, hf.defaults()).blocks()) == 1


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
    entry = get_optimizer("signsgd")
    opt = entry.build(model, entry.resolve({"lr": "0.1"}))
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


def test_build_takes_a_resolved_setting_and_refuses_overrides():
    """``build`` does not resolve again: a partial setting (overrides) or one naming keys
    the schema lacks is refused in one line naming them; the resolved one builds."""
    entry = get_optimizer("adam")
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"^the setting for adam is not resolved \(it lacks "):
        entry.build(model, {"lr": 0.1})
    with pytest.raises(ValueError, match=r"it has unknown damping\)"):
        entry.build(model, {**entry.defaults(), "damping": 1.0})
    opt = entry.build(model, entry.resolve({"lr": 0.1}))
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["betas"] == (0.9, 0.999)


def test_an_entry_with_a_default_outside_its_own_range_is_refused():
    """Every default is checked when the entry is made, so ``defaults()`` is resolved."""
    with pytest.raises(ValueError, match="out of range"):
        OptimizerEntry(
            name="bad",
            description="",
            optimizer_class=torch.optim.SGD,
            hyperparameters={"mode": HyperParameter(str, "x", choices=("a", "b"))},
            build_fn=lambda model, hps: torch.optim.SGD(model.parameters(), lr=0.1),
        )
    for name in optimizer_names():
        entry = get_optimizer(name)
        assert entry.defaults() == entry.resolve({})


def test_a_run_resolves_its_setting_once(tmp_path, monkeypatch):
    """``bdhf-bench run`` with two seeds resolves ``--hp`` once, into both run specs; the
    trainer and ``build`` take the spec's setting as it is."""
    from runner_helpers import cli, load, result_files

    calls = []
    original = OptimizerEntry.resolve

    def counted(self, overrides=None):
        calls.append(dict(overrides or {}))
        return original(self, overrides)

    monkeypatch.setattr(OptimizerEntry, "resolve", counted)
    args = ["run", "-p", "tiny_mlp", "-o", "adam", "--steps", "2", "--data", "synthetic"]
    out = cli(
        *args, "--seed", "1", "--seed", "2", "--hp", "lr=0.05", "-q", "--output-dir", str(tmp_path)
    )
    assert out.exit_code == 0, out.output
    assert calls == [{"lr": "0.05"}]
    results = [load(p) for p in result_files(tmp_path)]
    assert [r["optimizer_hyperparams"]["lr"] for r in results] == [0.05, 0.05]


def test_a_run_spec_with_an_unresolved_setting_fails_in_one_line(tmp_path):
    from bdhf_bench.runner import Budget, Execution, ResultStore, RunInputError, RunSpec, Trainer

    spec = RunSpec("tiny_mlp", "adam", {"lr": 0.1}, 0, 8, Budget(steps=1), data="synthetic")
    trainer = Trainer(spec, ResultStore(tmp_path), Execution(torch.device("cpu"), progress=False))
    with pytest.raises(RunInputError, match="adam on tiny_mlp: the setting for adam is not re"):
        trainer.run()
