"""Runs of models that draw random numbers resume on the random stream they would have had.

mnist_vae (DeepOBS's VAE: Dropout in encoder and decoder, and a sampled latent) on generated
data, stopped after step 4 and resumed from the checkpoint taken after step 3 (between two
evaluations, the harder case: the random state mid-interval): the result equals the
uninterrupted run's, bitwise (CPU). HF replays the gradient pass's draws in its later passes
(the random tape), so it is checked beside Adam (two CG iterations a step: the VAE's products
are slow on a CPU, and the tape is the same for BDHF).
"""

from __future__ import annotations

import pytest
from runner_helpers import interrupt_then_resume, run_spec, without_timings

from bdhf_bench.optim import get_optimizer
from bdhf_bench.runner import Budget, RunSpec


def _spec(optimizer: str) -> RunSpec:
    hps = {"cg_max_iters": 2, "backtrack": False} if optimizer == "hf" else {}
    return RunSpec(
        problem="mnist_vae",
        optimizer=optimizer,
        hyperparameters=get_optimizer(optimizer).resolve(hps),
        seed=5,
        batch_size=4,
        budget=Budget(steps=6),
        eval_every=5,
        data="synthetic",
    )


@pytest.mark.parametrize("optimizer", ["adam", "hf"])
def test_a_random_model_resumes_bitwise(tmp_path, monkeypatch, optimizer):
    spec = _spec(optimizer)
    reference = run_spec(spec, tmp_path / "straight")
    resumed = interrupt_then_resume(monkeypatch, spec, tmp_path / "killed", 4, checkpoint_every=0.0)
    assert without_timings(resumed) == without_timings(reference)
    assert reference["status"] == "finished"
