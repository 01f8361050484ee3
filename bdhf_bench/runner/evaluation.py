"""Untimed evaluation of a model on whole splits: the objective (with L2, as DeepOBS reports it)
and the accuracy, accumulated on the device and read back once per split."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..data import eval_batches
from ..problems import Problem

EVAL_BATCH = 1000


@dataclass
class SplitResult:
    loss: float
    accuracy: float | None


@torch.no_grad()
def evaluate_split(
    model: nn.Module,
    problem: Problem,
    pair: tuple[Tensor, Tensor],
    l2: list[float],
    batch_size: int,
) -> SplitResult:
    """Mean objective per example (scaled like a training batch for sum-reduced losses) and
    accuracy over every example of a split, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        total = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.float64, device=device)
        count = 0
        for x, y in eval_batches(pair, max(batch_size, EVAL_BATCH)):
            inputs, targets = problem.prepare_batch(x, y)
            outputs = model(inputs)
            n = len(x)
            batch_loss = problem.loss(outputs, targets).double()
            if problem.loss.reduction == "sum":
                batch_loss = batch_loss / n
            total += batch_loss * n
            if problem.correct is not None:
                correct += problem.correct(outputs, targets).double()
            count += n
        per_example = total / max(count, 1)
        if problem.loss.reduction == "sum":
            per_example = per_example * batch_size
        penalty = sum(
            0.5 * c * p.double().square().sum() for p, c in zip(model.parameters(), l2) if c
        )
        values = torch.stack([per_example + penalty, correct / max(count, 1)]).tolist()
    finally:
        model.train(was_training)
    accuracy = values[1] if problem.correct is not None else None
    return SplitResult(loss=values[0], accuracy=accuracy)
