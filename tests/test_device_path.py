"""The GPU path checked on the CPU: `bench device --small`, host reads per step, and the GPU
faults a CPU can still catch (the tests' device, TF32, the GPU model in a run's context, each
worker's current GPU, compilation before the clock)."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator

import pytest
import torch
from click.testing import CliRunner
from torch.utils._python_dispatch import _get_current_dispatch_mode

from bdhf_bench.benchmarks.host_reads import HostReadCounter, count_step_reads
from bdhf_bench.cli import main
from bdhf_bench.optim import get_optimizer
from bdhf_bench.optim.protocol import HessianFreeDriver
from bdhf_bench.runner import RunSpec, default_device, executors
from bdhf_bench.runner import environment as environment_module
from bdhf_bench.runner.context import run_context
from bdhf_bench.runner.environment import environment, exact_float32
from bdhf_bench.runner.spec import Budget


@pytest.fixture(scope="module")
def device_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("device")
    result = CliRunner().invoke(
        main, ["bench", "device", "--device", "cpu", "--small", "--out", str(out)]
    )
    return result, json.loads((out / "device.json").read_text()), (out / "device.md").read_text()


def test_bench_device_runs_every_part_on_the_cpu(device_report):
    result, report, page = device_report
    assert result.exit_code == 0, result.output
    assert set(report["parts"]) == {
        "products",
        "steps",
        "host_reads",
        "step_cost",
        "memory",
        "runner",
    }
    assert all(part["ok"] for part in report["parts"].values())
    assert report["environment"]["torch"] == torch.__version__
    for name in report["parts"]:
        assert f"## {name}: ok" in page


def test_bench_device_products_agree_with_float64_on_every_path(device_report):
    """float32 products against the float64 reference: not identical (so computed in float32)
    and within float32 rounding on every path, Dropout's replayed masks included (a fresh mask
    would differ in O(1))."""
    rows = device_report[1]["parts"]["products"]["rows"]
    paths = {r["path"] for r in rows}
    assert paths == {"MLP", "CNN", "BatchNorm", "Dropout", "LSTM", "autoencoder", "K-FAC"}
    for r in rows:
        errors = (r["full_error"], r["blocks_error"])
        if r["dtype"] == "float32":
            assert all(0 < e < 1e-5 for e in errors), r
        else:
            assert all(e == 0 for e in errors), r  # the same float64 computation on the CPU


def test_bench_device_memory_has_a_row_per_optimizer(device_report):
    rows = device_report[1]["parts"]["memory"]["rows"]
    stepped = {r["what"].split()[0] for r in rows if "step" in r["what"]}
    installed = {n for n in ("adam", "bdhf", "hf", "kfac", "soap", "lbfgs")}
    assert installed <= stepped
    assert all(r["peak_mib"] is None for r in rows)  # no device memory to read on a CPU


def test_the_counter_counts_each_host_read():
    t = torch.arange(4.0)
    with HostReadCounter() as counter:
        t.sum().item()
        t.tolist()
        bool(t[1] > 0)
        float(t[2])
        t.nonzero()
        t.to("cpu")
        t + 1  # not a read
    assert counter.calls == {
        "item": 1,
        "tolist": 1,
        "__bool__": 1,
        "__float__": 1,
        "nonzero": 1,
        "to": 1,
    }


@pytest.mark.parametrize("optimizer", ["bdhf", "hf"])
def test_host_reads_per_step_fall_with_cg_check_every(optimizer):
    """Reading CG's active-block mask every K iterations: at K=1 at least one read per CG
    iteration, and fewer reads at every larger K over the same CG iterations."""
    rows = [count_step_reads("tiny_mlp", optimizer, check_every=k) for k in (1, 2, 4)]
    assert rows[0].by_call["tolist"] >= rows[0].cg_iterations_per_step > 4
    assert rows[0].reads_per_step > rows[1].reads_per_step > rows[2].reads_per_step
    assert len({r.cg_iterations_per_step for r in rows}) == 1


def test_the_tests_default_device_is_the_cpu_even_with_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device() == torch.device("cpu")
    monkeypatch.delenv("BDHF_BENCH_DEVICE")
    assert default_device() == torch.device("cuda")


@pytest.fixture
def tf32_on() -> Iterator[None]:
    """torch's TF32 switches on for the test, restored after (they are module properties that
    monkeypatch cannot restore)."""
    flags = (torch.backends.cuda.matmul, torch.backends.cudnn)
    before = [f.allow_tf32 for f in flags]
    for f in flags:
        f.allow_tf32 = True
    yield
    for f, value in zip(flags, before):
        f.allow_tf32 = value


def test_runs_on_a_gpu_turn_tf32_off_and_record_it(tf32_on):
    exact_float32(torch.device("cpu"))
    env = environment(torch.device("cpu"))
    assert (env["tf32_matmul"], env["tf32_cudnn"]) == (True, True)
    exact_float32(torch.device("cuda"))
    env = environment(torch.device("cpu"))
    assert (env["tf32_matmul"], env["tf32_cudnn"]) == (False, False)


def test_a_gpu_runs_context_names_the_gpu_model(monkeypatch):
    hps = get_optimizer("adam").defaults()
    spec = RunSpec("tiny_mlp", "adam", hps, 0, 8, Budget(steps=1), data="synthetic")
    models = iter(["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"])
    monkeypatch.setattr(environment_module.torch.cuda, "get_device_name", lambda d: next(models))
    h100 = run_context(spec, torch.device("cuda"), None)
    a100 = run_context(spec, torch.device("cuda"), None)
    assert h100["device"] == "cuda (NVIDIA H100 80GB HBM3)"
    assert h100 != a100
    assert run_context(spec, torch.device("cpu"), None)["device"] == "cpu"


def test_a_pool_worker_makes_its_gpu_current_first(monkeypatch):
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setattr(executors, "_WORKER_GPU", None)
    slots: queue.Queue = queue.Queue()
    slots.put(3)
    executors._claim_gpu(slots)
    assert current == [3]
    assert executors._WORKER_GPU == 3


@pytest.mark.parametrize("compiled", [False, True])
def test_a_compiled_cg_is_warmed_up_before_the_clock(monkeypatch, compiled):
    """The cost probe's twin takes one step outside the FLOP count (where a compiled CG really
    compiles) when the CG is compiled, and none otherwise."""
    from bdhf_bench.optim import ModelClosure
    from bdhf_bench.problems import get_problem, seeded_model
    from bdhf_bench.runner.cost import measure_cost

    counted = []
    real_step = HessianFreeDriver.step

    def step(self, closure):
        counted.append(_get_current_dispatch_mode() is not None)
        if not counted[-1]:
            return torch.tensor(0.0)  # the warm-up: what compiles is torch's business
        return real_step(self, closure)

    monkeypatch.setattr(HessianFreeDriver, "step", step)
    problem = get_problem("tiny_mlp")
    model = seeded_model(problem, 0)
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(16, 8, generator=g), torch.randint(0, 4, (16,), generator=g))
    entry = get_optimizer("hf")
    hps = entry.resolve({})
    execution = {"cg_check_every": 1, "cg_compiled": compiled}
    optimizer = entry.build(model, hps, cg_check_every=1, cg_compiled=False)

    def closure(m, x, y):
        return ModelClosure(m, problem.loss, x, y)

    measure_cost(entry, hps, optimizer, model, closure, [batch], execution)
    assert counted == [True] + [False] * compiled


def test_dropout_products_replay_the_reference_masks_on_another_rng_stream(monkeypatch):
    """A device's RNG draws other masks than the CPU's: the device pass must replay the masks
    the CPU reference recorded. Each model build here leaves the RNG at another state, as a
    second device would; the float32 product still matches the float64 reference."""
    from bdhf_bench.benchmarks import device as device_bench
    from bdhf_bench.optim.random_tape import RandomTape

    builds = []
    real = device_bench.seeded_model

    def model_on_another_stream(*args, **kwargs):
        model = real(*args, **kwargs)
        builds.append(1)
        torch.rand(len(builds))  # moves the RNG on by a different amount each time
        return model

    monkeypatch.setattr(device_bench, "seeded_model", model_on_another_stream)
    tape = RandomTape()
    cpu = torch.device("cpu")
    ref = device_bench.ggn_products("cifar100_allcnnc", 2, cpu, torch.float64, tape)
    assert tape.saw_random and tape.draws
    other = device_bench.ggn_products("cifar100_allcnnc", 2, cpu, torch.float32, tape)
    for value, reference in zip(other, ref):
        assert 0 < device_bench.relative_error(value, reference) < 1e-5
    fresh = device_bench.ggn_products("cifar100_allcnnc", 2, cpu, torch.float32, RandomTape())
    assert device_bench.relative_error(fresh[0], ref[0]) > 1e-2  # without the tape: other masks
