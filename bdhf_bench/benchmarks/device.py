"""The device in one command: curvature products, steps, host reads, step cost and memory.

``bdhf-bench bench device --device cuda`` proves the GPU path and records its figures in one
call of a few minutes (device machines are lent rarely and briefly); ``--device cpu --small``
runs the same code on small sizes, in CI, so the path cannot rot between GPU sessions. Parts:

- ``products``: for every curvature path (MLP, CNN, BatchNorm, Dropout replayed from the random
  tape, the LSTM node, the autoencoder, and curvlinops' K-FAC operator), the full and all-blocks
  GGN products in float32 and float64 on the device against float64 on the CPU (relative error);
- ``steps``: one BDHF and one HF step on the device against the same step on the CPU (relative
  difference of the parameter update, float32 and float64);
- ``host_reads``: reads of device values on the host per HF and BDHF step, CG mask read every
  1 and 4 iterations;
- ``step_cost``: ``bench step-cost`` rows on the device (eager CG, CG mask every 4 iterations
  and, except with ``--small``, the compiled CG iteration), timed without the part timer;
- ``memory``: peak device memory of one step for every registered optimizer, and the largest
  curvature batch of the paper's ResNet whose products fit (CUDA only; elsewhere the steps run
  and the figures read "n/a");
- ``runner``: one Adam epoch of the runner against a bare loop (``bench runner``).

A part that fails is reported with its error and the rest still run. The report (``device.json``
and ``device.md``) says which torch, CUDA and device produced it.
"""

from __future__ import annotations

import math
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch
from torch import Tensor, nn

from ..atomic import atomic_file, write_json
from ..curvature import BlockLayout, GGNContext, GGNOperator, partition
from ..data import train_stream
from ..optim import ModelClosure, get_optimizer, optimizer_names
from ..optim.kfac import torch_loss
from ..optim.random_tape import RandomTape
from ..problems import get_problem, seeded_model
from ..runner.environment import environment, exact_float32
from ..runner.loop import problem_data
from .data_pipeline import write_random_mnist
from .engine_setting import ENGINE_SETTING, engine_hyperparameters
from .host_reads import count_step_reads
from .runner_overhead import bare_epoch, runner_epoch
from .step_cost import measure_step_cost

PRODUCT_CASES = {
    # path: (problem on a GPU, batch; problem with --small, batch)
    "MLP": (("mnist_mlp", 128), ("mnist1d_mlp", 8)),
    "CNN": (("cifar10_3c3d", 128), ("mnist1d_cnn", 8)),
    "BatchNorm": (("cifar10_resnet", 128), ("cifar10_resnet", 2)),
    "Dropout": (("cifar100_allcnnc", 64), ("cifar100_allcnnc", 2)),
    "LSTM": (("smnist_lstm", 64), ("mnist1d_lstm", 4)),
    "autoencoder": (("mnist_autoencoder", 200), ("digits_autoencoder", 8)),
}
KFAC_CASE = (("mnist_mlp", 128), ("mnist1d_mlp", 8))
STEP_CASE = (("mnist_autoencoder", 200), ("digits_autoencoder", 16))
COST_PROBLEMS = (("mnist_mlp", "cifar10_3c3d", "smnist_lstm", "mnist_autoencoder"), ("tiny_mlp",))
RESNET_BATCHES = ((128, 256, 512, 1024, 2048, 4096, 8192), (2, 4))
TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-9}
"""Relative error to float64 on the CPU a product or step passes with."""


def relative_error(value: Tensor, reference: Tensor) -> float:
    """``|value - reference| / |reference|`` in float64 on the CPU."""
    ref = reference.detach().to("cpu", torch.float64)
    diff = value.detach().to("cpu", torch.float64) - ref
    return float(diff.norm() / ref.norm().clamp_min(torch.finfo(torch.float64).tiny))


def _batch(problem_name: str, n: int) -> tuple[Any, Tensor]:
    """The first synthetic batch of ``n`` examples, prepared for the loss, on the CPU."""
    problem = get_problem(problem_name)
    splits = problem_data(
        problem, batch_size=n, source="synthetic", data_dir=None, device=torch.device("cpu"), seed=0
    )
    x, y = next(iter(train_stream(splits, n, seed=0, augment=False).epoch(0)))
    return problem.prepare_batch(x, y)


def _moved(value: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """``value`` on ``device``, its floating tensors in ``dtype``."""
    if isinstance(value, Tensor):
        return value.to(device, dtype) if value.is_floating_point() else value.to(device)
    if isinstance(value, tuple | list):
        return type(value)(_moved(v, device, dtype) for v in value)
    return value


def _model(problem_name: str, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The problem's seed-0 model, built on the CPU (one initialisation everywhere), moved."""
    return seeded_model(get_problem(problem_name), 0, "cpu").to(device, dtype).train()


def ggn_products(
    problem_name: str, n: int, device: torch.device, dtype: torch.dtype, tape: RandomTape
) -> tuple[Tensor, Tensor]:
    """The full and all-blocks GGN products of one fixed vector on the problem's first batch.

    The first call on a tape records the pass's random numbers (Dropout masks); later calls
    replay them, moved to ``device`` and ``dtype``, so every device sees one random function.
    """
    problem = get_problem(problem_name)
    model = _model(problem_name, device, dtype)
    inputs, targets = _moved(_batch(problem_name, n), device, dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    layout = BlockLayout([b.params for b in partition(model, "module")], all_params=params)
    g = torch.Generator().manual_seed(1)
    v = torch.randn(layout.numel, generator=g, dtype=torch.float64).to(device, dtype)
    if tape.draws:
        tape.draws = [d.to(device, dtype) for d in tape.draws]
        context = tape.replaying(n)
    else:
        context = tape.recording(n)
    with context:
        ctx = GGNContext.from_model(model, inputs, targets, problem.loss, params)
    full = GGNOperator(ctx, layout)
    return full @ v, full.block_diagonal() @ v


def kfac_product(
    problem_name: str, n: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """curvlinops' K-FAC operator (the exact GGN's factors) times one fixed vector."""
    from curvlinops import KFACLinearOperator

    problem = get_problem(problem_name)
    model = _model(problem_name, device, dtype)
    inputs, targets = _moved(_batch(problem_name, n), device, dtype)
    params = [m.weight for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    loss_fn, _ = torch_loss(problem.loss, n)
    op = KFACLinearOperator(
        model, loss_fn, params, [(inputs, targets)], check_deterministic=False, fisher_type="type-2"
    )
    numel = sum(p.numel() for p in params)
    g = torch.Generator().manual_seed(1)
    v = torch.randn(numel, generator=g, dtype=torch.float64).to(device, dtype)
    product = op @ v
    return product, product


def _path_products(
    path: str, name: str, n: int, tape: RandomTape
) -> Callable[[torch.device, torch.dtype], tuple[Tensor, Tensor]]:
    """The full and block products of one curvature path, on a device in a dtype."""
    if path == "K-FAC":
        return lambda device, dtype: kfac_product(name, n, device, dtype)
    return lambda device, dtype: ggn_products(name, n, device, dtype, tape)


def products_part(device: torch.device, small: bool) -> list[dict[str, Any]]:
    """Relative errors of every curvature path's products to float64 on the CPU."""
    rows = []
    cases = {path: sizes[small] for path, sizes in PRODUCT_CASES.items()}
    cases["K-FAC"] = KFAC_CASE[small]
    for path, (name, n) in cases.items():
        products = _path_products(path, name, n, RandomTape())
        ref_full, ref_blocks = products(torch.device("cpu"), torch.float64)
        for dtype in (torch.float32, torch.float64):
            full, blocks = products(device, dtype)
            errors = {
                "full": relative_error(full, ref_full),
                "blocks": relative_error(blocks, ref_blocks),
            }
            rows.append(
                {
                    "path": path,
                    "problem": name,
                    "batch": n,
                    "dtype": str(dtype).removeprefix("torch."),
                    "full_error": errors["full"],
                    "blocks_error": errors["blocks"],
                    "ok": max(errors.values()) <= TOLERANCE[dtype],
                }
            )
    return rows


def one_step_update(
    optimizer: str, problem_name: str, n: int, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """The parameter change of one step from the seed-0 model on the problem's first batch."""
    problem = get_problem(problem_name)
    model = _model(problem_name, device, dtype)
    inputs, targets = _moved(_batch(problem_name, n), device, dtype)
    before = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    entry = get_optimizer(optimizer)
    driver = entry.driver(entry.build(model, engine_hyperparameters(entry)))
    driver.before_steps()
    torch.manual_seed(0)
    l2 = problem.l2_coefficients(model)
    driver.step(ModelClosure(model, problem.loss, inputs, targets, l2))
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach() - before


def steps_part(device: torch.device, small: bool) -> list[dict[str, Any]]:
    """One BDHF and one HF step on the device against the same step on the CPU."""
    name, n = STEP_CASE[small]
    rows = []
    for optimizer in ("bdhf", "hf"):
        for dtype in (torch.float32, torch.float64):
            reference = one_step_update(optimizer, name, n, torch.device("cpu"), dtype)
            update = one_step_update(optimizer, name, n, device, dtype)
            error = relative_error(update, reference)
            rows.append(
                {
                    "optimizer": optimizer,
                    "problem": name,
                    "batch": n,
                    "dtype": str(dtype).removeprefix("torch."),
                    "update_error": error,
                    "ok": error <= TOLERANCE[dtype] ** 0.5,
                }
            )
    return rows


def host_reads_part(device: torch.device, small: bool) -> list[dict[str, Any]]:
    """Host reads per HF and BDHF step, CG's mask read every 1 and every 4 iterations."""
    problem = "tiny_mlp" if small else "mnist_mlp"
    rows = []
    for optimizer in ("bdhf", "hf"):
        for k in (1, 4):
            r = count_step_reads(problem, optimizer, check_every=k, device=device)
            rows.append(
                {
                    "optimizer": optimizer,
                    "problem": problem,
                    "check_every": k,
                    "reads_per_step": r.reads_per_step,
                    "cg_iterations_per_step": r.cg_iterations_per_step,
                }
            )
    return rows


def step_cost_part(device: torch.device, small: bool) -> list[dict[str, Any]]:
    """``bench step-cost`` rows per CG variant, timed without the part timer's syncs."""
    variants = {"eager": (1, False), "check every 4": (4, False)}
    if not small:
        variants["compiled"] = (1, True)
    rows = []
    for problem in COST_PROBLEMS[small]:
        for variant, (k, compiled) in variants.items():
            for r in measure_step_cost(
                problem,
                [("adam", {}), ("bdhf", ENGINE_SETTING), ("hf", ENGINE_SETTING)],
                device=device,
                steps=2 if small else 5,
                warmup=2 if compiled else 1,
                check_every=k,
                compiled=compiled,
                parts=False,
            ):
                rows.append(
                    {
                        "problem": problem,
                        "cg": variant,
                        "optimizer": r.optimizer,
                        "seconds_per_step": r.seconds_per_step,
                        "ratio_to_adam": r.ratio_to_adam,
                        "gradient_equivalents": r.gradient_equivalents,
                        "cg_iterations": r.cg_iterations,
                    }
                )
    return rows


def _peak_bytes(device: torch.device) -> float | None:
    return float(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def memory_part(device: torch.device, small: bool) -> list[dict[str, Any]]:
    """Peak device memory of one step per optimizer; the ResNet's largest curvature batch."""
    name, n = STEP_CASE[small]
    rows = []
    for optimizer in optimizer_names():
        entry = get_optimizer(optimizer)
        if entry.missing_package() is not None:
            continue
        _reset_peak(device)
        one_step_update(optimizer, name, n, device, torch.float32)
        peak = _peak_bytes(device)
        rows.append({"what": f"{optimizer} step, {name} batch {n}", "peak_mib": _mib(peak)})
    largest = None
    for batch in RESNET_BATCHES[small]:
        _reset_peak(device)
        try:
            ggn_products("cifar10_resnet", batch, device, torch.float32, RandomTape())
        except torch.cuda.OutOfMemoryError:
            break
        largest = (batch, _peak_bytes(device))
    if largest is not None:
        what = f"cifar10_resnet products, largest curvature batch tried that fit: {largest[0]}"
        rows.append({"what": what, "peak_mib": _mib(largest[1])})
    _reset_peak(device)
    return rows


def _mib(value: float | None) -> float | None:
    return None if value is None else value / 2**20


def runner_part(device: torch.device, small: bool) -> list[dict[str, Any]]:
    """The runner's Adam epoch on mnist_mlp (generated IDX data) against a bare loop."""
    if small:
        return [{"skipped": "a 60,000-image epoch is not small"}]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        write_random_mnist(data_dir)
        bare_epoch(data_dir, device, seed=0)  # warm-up: CUDA context, kernels
        bare = bare_epoch(data_dir, device, seed=1)
        ours = runner_epoch(data_dir, device, seed=1)
    return [{"bare_seconds": bare, "runner_seconds": ours, "overhead": ours / bare - 1}]


PARTS: dict[str, Callable[[torch.device, bool], list[dict[str, Any]]]] = {
    "products": products_part,
    "steps": steps_part,
    "host_reads": host_reads_part,
    "step_cost": step_cost_part,
    "memory": memory_part,
    "runner": runner_part,
}


def run_parts(
    device: torch.device, small: bool, parts: tuple[str, ...], echo: Callable[[str], None]
) -> dict[str, Any]:
    """Every part in turn; a failure is recorded with its error and the next part still runs."""
    exact_float32(device)
    report: dict[str, Any] = {"environment": environment(device), "small": small, "parts": {}}
    for name in parts:
        echo(f"{name}...")
        start = time.perf_counter()
        try:
            rows = PARTS[name](device, small)
            entry: dict[str, Any] = {"ok": all(r.get("ok", True) for r in rows), "rows": rows}
        except Exception as exc:  # a failing part must not stop the others
            entry = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "rows": []}
            entry["traceback"] = traceback.format_exc(limit=8)
        entry["seconds"] = time.perf_counter() - start
        report["parts"][name] = entry
        echo(f"{name}: {'ok' if entry['ok'] else 'FAILED'} ({entry['seconds']:.1f} s)")
    return report


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3g}"
    return "n/a" if value is None else str(value)


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: the environment, then one table per part."""
    env = report["environment"]
    lines = [
        "# bdhf-bench bench device",
        "",
        ", ".join(f"{k} {v}" for k, v in env.items())
        + (" (small sizes)" if report["small"] else ""),
    ]
    for name, part in report["parts"].items():
        status = "ok" if part["ok"] else "FAILED"
        lines += ["", f"## {name}: {status} ({part['seconds']:.1f} s)", ""]
        if "error" in part:
            lines += ["```", part["traceback"].rstrip(), "```"]
            continue
        keys = list(dict.fromkeys(k for row in part["rows"] for k in row))
        lines += ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
        lines += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in part["rows"]]
    return "\n".join(lines) + "\n"


@click.command("device")
@click.option("--device", "device_name", default=None, help="cpu, cuda or cuda:N (default: cuda).")
@click.option("--small", is_flag=True, help="Small sizes (the CPU check CI runs).")
@click.option(
    "--part",
    "parts",
    type=click.Choice(list(PARTS)),
    multiple=True,
    help="Parts to run (repeatable; default: all).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports/device"),
    show_default=True,
    help="Folder for device.json and device.md.",
)
def command(device_name: str | None, small: bool, parts: tuple[str, ...], out: Path) -> None:
    """Every curvature path, step cost and memory on a device, in one report; exits 1 when a
    part failed."""
    try:
        device = torch.device(device_name or "cuda")
    except RuntimeError:
        raise click.BadParameter(f"unknown device {device_name!r}", param_hint="--device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise click.ClickException("no CUDA device here; use --device cpu (with --small for CI)")
    report = run_parts(device, small, parts or tuple(PARTS), click.echo)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "device.json", report)
    with atomic_file(out / "device.md") as f:
        f.write(markdown(report))
    click.echo(f"report: {out / 'device.md'} and {out / 'device.json'}")
    failed = [name for name, part in report["parts"].items() if not part["ok"]]
    if failed:
        raise click.ClickException(f"parts failed: {', '.join(failed)}")
