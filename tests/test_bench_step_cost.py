"""``bench step-cost`` and ``bench step-profile``: their timers against known sleeps, their rows
against closed forms (Adam's step is one gradient), and the commands end to end."""

from __future__ import annotations

import time

import pytest
import torch
from click.testing import CliRunner

import bdhf_bench.optim.hf as hf_module
from bdhf_bench.benchmarks import parts, step_cost
from bdhf_bench.cli import main
from bdhf_bench.curvature.ggn import GGNContext
from bdhf_bench.optim import ModelClosure


def test_part_timer_counts_time_inside_the_products_only(monkeypatch):
    monkeypatch.setattr(GGNContext, "packed_block_products", lambda self, *a, **k: time.sleep(0.05))
    patched = GGNContext.packed_block_products
    timer = parts.PartTimer(torch.device("cpu"))
    with timer.active():
        GGNContext.packed_block_products(None)
        time.sleep(0.03)  # outside a product
        GGNContext.packed_block_products(None)
    assert timer.seconds["products"] == pytest.approx(0.10, abs=0.02)
    assert GGNContext.packed_block_products is patched  # restored on exit


def test_part_timer_is_exclusive_and_restores(monkeypatch):
    monkeypatch.setattr(GGNContext, "packed_block_products", lambda self, *a, **k: time.sleep(0.04))

    def cg(*args, **kwargs):
        time.sleep(0.02)
        GGNContext.packed_block_products(None)
        GGNContext.packed_block_products(None)

    monkeypatch.setattr(hf_module, "block_cg", cg)
    originals = (hf_module.block_cg, ModelClosure.__call__, GGNContext.packed_product)
    timer = parts.PartTimer(torch.device("cpu"))
    with timer.active():
        step = timer.wrap("rest", lambda: (time.sleep(0.01), hf_module.block_cg()))
        step()
    s = timer.seconds
    assert s["products"] == pytest.approx(0.08, abs=0.015)
    assert s["CG vectors"] == pytest.approx(0.02, abs=0.015)
    assert s["rest"] == pytest.approx(0.01, abs=0.015)
    assert s["evaluations"] == 0.0
    assert (hf_module.block_cg, ModelClosure.__call__, GGNContext.packed_product) == originals


def test_step_cost_rows_on_mnist_mlp():
    rows = step_cost.measure_step_cost(
        "mnist_mlp",
        [("bdhf", {"cg_max_iters": 3}), ("hf", {"cg_max_iters": 3})],
        device=torch.device("cpu"),
        batch_size=16,
        steps=2,
        warmup=0,
    )
    assert [r.optimizer for r in rows] == ["adam", "bdhf", "hf"]
    adam, bdhf, hf = rows
    # Adam: one gradient per step, no products, the reference of both ratios
    assert adam.gradient_equivalents == pytest.approx(1.0)
    assert adam.ratio_to_adam == 1.0 and adam.wall_per_flop == 1.0
    assert adam.product_share == 0.0 and adam.cg_iterations == 0.0
    for r in (bdhf, hf):
        assert r.gradient_equivalents > 1.5
        assert r.wall_per_flop == pytest.approx(r.ratio_to_adam / r.gradient_equivalents)
        assert 0.05 < r.product_share < 1.0  # products are a third of these steps
        assert 1.0 <= r.cg_iterations <= 3.0
        # the products' and the rest's FLOPs and times add up to the step's
        assert 0.2 < r.product_equivalents < r.gradient_equivalents - 1.0
        prod_time = r.product_wall_per_flop * r.product_equivalents
        rest_time = r.other_wall_per_flop * (r.gradient_equivalents - r.product_equivalents)
        assert prod_time + rest_time == pytest.approx(r.ratio_to_adam)
        assert prod_time == pytest.approx(r.product_share * r.ratio_to_adam)
    assert adam.product_equivalents == 0.0 and adam.other_wall_per_flop == 1.0
    assert adam.cg_vector_share == 0.0 and adam.wall_per_flop_without_cg_vectors == 1.0
    for r in (bdhf, hf):
        assert 0.0 < r.cg_vector_share < 1.0 - r.product_share
        assert r.wall_per_flop_without_cg_vectors == pytest.approx(
            (1 - r.cg_vector_share) * r.wall_per_flop
        )


def test_step_cost_times_cg_vector_work_without_the_products(monkeypatch):
    """50 ms of added work inside every CG run shows up as CG vector time; the products that
    CG calls do not."""
    real = hf_module.block_cg

    def slow_cg(*args, **kwargs):
        time.sleep(0.05)
        return real(*args, **kwargs)

    monkeypatch.setattr(hf_module, "block_cg", slow_cg)
    rows = step_cost.measure_step_cost(
        "mnist_mlp",
        [("bdhf", {"cg_max_iters": 3})],
        device=torch.device("cpu"),
        batch_size=16,
        steps=2,
        warmup=0,
    )
    bdhf = rows[1]
    cg_seconds = bdhf.cg_vector_share * bdhf.seconds_per_step
    assert 0.05 <= cg_seconds < 0.05 + 0.5 * (bdhf.seconds_per_step - 0.05)
    assert bdhf.product_share * bdhf.seconds_per_step > 0.0


def test_commands_print_their_tables():
    out = CliRunner().invoke(
        main,
        ["bench", "step-cost", "--problem", "mnist_mlp", "--steps", "1", "--warmup", "0"],
    )
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "wall/FLOP" in lines[1] and "in prod" in lines[1] and "every 1 iteration" in lines[0]
    assert [ln.split()[3] for ln in lines[3:6]] == ["adam", "bdhf", "hf"]
    out = CliRunner().invoke(
        main,
        ["bench", "step-profile", "--problem", "mnist_mlp", "--optimizer", "bdhf", "--steps", "1"],
    )
    assert out.exit_code == 0, out.output
    row = out.output.splitlines()[3].split()
    assert row[:2] == ["mnist_mlp", "bdhf"]
    # the parts add up to the step (exclusive timing): products, CG, evaluations, rest
    step_ms, parts = float(row[2]), [float(row[i]) for i in (3, 5, 7, 9)]
    assert sum(parts) == pytest.approx(step_ms, rel=0.02)


def test_cg_check_every_and_compile_reach_the_optimizers_cg(monkeypatch):
    seen = []
    real = hf_module.block_cg

    def spy(*args, **kwargs):
        seen.append((kwargs["check_every"], kwargs["compiled"]))
        return real(*args, **{**kwargs, "compiled": False})  # the plumbing, not the compiler

    monkeypatch.setattr(hf_module, "block_cg", spy)
    for every, compiled in ((1, False), (5, True)):
        seen.clear()
        step_cost.measure_step_cost(
            "mnist_mlp",
            [("bdhf", {"cg_max_iters": 2}), ("hf", {"cg_max_iters": 2})],
            device=torch.device("cpu"),
            batch_size=16,
            steps=1,
            warmup=0,
            check_every=every,
            compiled=compiled,
        )
        assert seen and set(seen) == {(every, compiled)}


def test_product_equivalents_count_every_product():
    # HF from zero with CG held to exactly 2 and 4 iterations: 2 + 1 and 4 + 1 products of the
    # same size per step (the block is every parameter; the +1 is the step scale's full
    # product), and one more on the first step, where the curvature start measures g'Gg
    fixed = {"warm_start": 0.0, "cg_tol": 1e-12}
    rows = step_cost.measure_step_cost(
        "mnist_mlp",
        [
            ("hf", {**fixed, "cg_max_iters": 2, "cg_min_iters": 2}),
            ("hf", {**fixed, "cg_max_iters": 4, "cg_min_iters": 4}),
        ],
        device=torch.device("cpu"),
        batch_size=16,
        steps=2,
        warmup=0,
    )
    two, four = rows[1:]
    assert two.cg_iterations == 2.0 and four.cg_iterations == 4.0
    assert four.product_equivalents / two.product_equivalents == pytest.approx(11 / 7)


def test_overhead_is_the_step_cost_harness_with_pass_counts():
    # `overhead` reads the same harness; its counts against closed forms: Adam makes one
    # forward and one backward pass per step and no product; BDHF evaluates the loss more often
    # than it differentiates it (the curvature pass, rho, the line search) and makes products
    res = CliRunner().invoke(
        main,
        ["overhead", "-p", "tiny_mlp", "-o", "bdhf", "--steps", "2", "--warmup", "0"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line.split()[1:] for line in res.output.splitlines()[3:]}
    assert set(rows) == {"adam", "bdhf"}
    assert rows["adam"][2:] == ["1.00", "1.00", "0.0", "1.00"]
    fwd, bwd, products = (float(v) for v in rows["bdhf"][2:5])
    assert fwd > bwd >= 1 and products >= 1
