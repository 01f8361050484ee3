"""GGN products against gradients and against curvlinops, side by side in one process.

For the paper's MNIST deep autoencoder (784-1000-500-250-30 and mirror, batch 256) and DeepOBS's
cifar10_3c3d net (batch 128): the time of one full GGN product and of one all-blocks product
(one block per layer) as multiples of one gradient (forward + backward) on the same batch, and
curvlinops' GGNLinearOperator matvec timed beside ours. Our products reuse the step's forward
pass, as the optimizers do; the one-off cost of that forward pass and of recording J^T u (paid
once per optimizer step, shared by all its products) is printed too. curvlinops recomputes its
forward pass in every matvec, which is what it is designed to do.
"""

from __future__ import annotations

import warnings

import click
import torch
from torch import nn

from ..curvature import BlockLayout, GGNContext, GGNOperator, partition
from ..problems import get_problem, seeded_model
from .timing import machine_options, median_times

CASES = (("mnist_autoencoder", 256), ("cifar10_3c3d", 128))
TARGETS = {
    "mnist_autoencoder": {"full": 1.4, "blocks": 4.0},
    "cifar10_3c3d": {"full": 1.4, "blocks": 2.0},
}
CURVLINOPS_TARGET = 0.7


def _batch(problem_name: str, n: int, device: torch.device):
    problem = get_problem(problem_name)
    g = torch.Generator().manual_seed(0)
    if problem_name == "mnist_autoencoder":
        x = torch.rand(n, 1, 28, 28, generator=g)
        return problem, *problem.prepare_batch(x.to(device), torch.zeros(n, dtype=torch.long))
    x = torch.rand(n, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    return problem, x, y


def _torch_loss(problem_name: str) -> nn.Module:
    """The same loss as a torch module, for curvlinops (sum reduction: scale does not change
    the cost)."""
    if problem_name == "mnist_autoencoder":
        return nn.BCEWithLogitsLoss(reduction="sum")
    return nn.CrossEntropyLoss(reduction="sum")


def measure(problem_name: str, n: int, device: torch.device, repeats: int) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # curvlinops' torch.jit use
        import curvlinops

    problem, inputs, targets = _batch(problem_name, n, device)
    model = seeded_model(problem, 0, device).train()
    params = [p for p in model.parameters() if p.requires_grad]

    def gradient() -> None:
        for p in params:
            p.grad = None
        problem.loss(model(inputs), targets).backward()

    ctx = GGNContext.from_model(model, inputs, targets, problem.loss, params)
    blocks = [b.params for b in partition(model, "module")]
    layout = BlockLayout(blocks, all_params=params)
    v = torch.randn(layout.numel, device=device)
    full = GGNOperator(ctx, layout)
    diagonal = full.block_diagonal()
    full @ v  # record J^T u once, as the optimizer's first product does

    def setup() -> None:
        c = GGNContext.from_model(model, inputs, targets, problem.loss, params)
        GGNOperator(c, layout) @ torch.zeros_like(v)

    op = curvlinops.GGNLinearOperator(
        model, _torch_loss(problem_name), params, [(inputs, targets)], check_deterministic=False
    )
    views = {id(p): t for p, t in zip(layout.params, layout.unpack(v))}
    v_curv = torch.cat([views[id(p)].reshape(-1) for p in params])  # curvlinops' order
    times = median_times(
        {
            "gradient": gradient,
            "full": lambda: full @ v,
            "blocks": lambda: diagonal @ v,
            "curvlinops": lambda: op @ v_curv,
            "setup_full": setup,
        },
        repeats=repeats,
        device=device,
    )
    g = times["gradient"]
    return {
        "gradient_s": g,
        "full": times["full"] / g,
        "blocks": times["blocks"] / g,
        "curvlinops": times["curvlinops"] / g,
        "full_vs_curvlinops": times["full"] / times["curvlinops"],
        "per_step_setup": (times["setup_full"] - times["full"]) / g,
        "blocks_count": layout.num_blocks,
    }


@click.command("products")
@click.option("--repeats", type=click.IntRange(min=3), default=15, show_default=True)
@machine_options
def command(repeats: int, device: torch.device, threads: int | None) -> None:
    """GGN product cost in gradients (full, all blocks) and against curvlinops."""
    click.echo(f"device {device}, {torch.get_num_threads()} threads, medians of {repeats} rounds")
    header = (
        f"{'net':<18} {'batch':>5} {'blocks':>6} {'grad ms':>8} {'full/grad':>9} "
        f"{'blocks/grad':>11} {'curvlinops/grad':>15} {'full/curvlinops':>15} {'setup/grad':>10}"
    )
    click.echo(header)
    click.echo("-" * len(header))
    verdicts = []
    for name, n in CASES:
        r = measure(name, n, device, repeats)
        click.echo(
            f"{name:<18} {n:>5} {r['blocks_count']:>6} {1e3 * r['gradient_s']:>8.1f} "
            f"{r['full']:>9.2f} {r['blocks']:>11.2f} {r['curvlinops']:>15.2f} "
            f"{r['full_vs_curvlinops']:>15.2f} {r['per_step_setup']:>10.2f}"
        )
        t = TARGETS[name]
        verdicts.append(
            f"{name}: full <= {t['full']}x gradient: {'yes' if r['full'] <= t['full'] else 'NO'}; "
            f"all blocks <= {t['blocks']}x: {'yes' if r['blocks'] <= t['blocks'] else 'NO'}; "
            f"full <= {CURVLINOPS_TARGET}x curvlinops: "
            f"{'yes' if r['full_vs_curvlinops'] <= CURVLINOPS_TARGET else 'NO'}"
        )
    click.echo("")
    for line in verdicts:
        click.echo(line)
    click.echo(
        "setup/grad: the once-per-step forward pass and J^T u recording, shared by every "
        "product of the step"
    )
