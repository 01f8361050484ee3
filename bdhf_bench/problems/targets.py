"""Targets for steps-to-target: DeepOBS's published ones, else a documented rule.

Published: DeepOBS's convergence performance ("conv_perf") from its v1.1 baselines, a TEST-split
metric (Schneider, Balles, Hennig: "DeepOBS: A Deep Learning Optimizer Benchmark Suite", ICLR
2019). The numbers are copied from ``baselines/deepobs_baselines_v1.1.csv`` (column conv_perf) so
that nothing here reads that file at run time. They come from DeepOBS's TensorFlow runs: a
reference for our PyTorch runs, not a value to match to the third digit.

Measured, for the problems on packaged data (MNIST-1D, digits): AlgoPerf's way, the VALIDATION
level a tuned Adam reaches within the problem's default budget (the ``ci`` suite's), with the
command, the selected learning rate and the values it reached in the source text. The paper's
autoencoder and sequential-MNIST LSTM are measured the same way on the real 10,000-digit MNIST
subset, at the time-to-target suite's batch sizes (``runners/paper_cpu.toml``).

Rule, for the other problems without a published target: a round test-split level that a tuned
first-order optimizer reaches with this architecture well within the default budget, chosen here
(provisional: to be replaced by the DeepOBS-style figure of our own Adam baseline once it is
measured). The source string of each such target says "rule" and why the level.
"""

from __future__ import annotations

from .base import Target

DEEPOBS_SOURCE = (
    "DeepOBS v1.1 published baselines, conv_perf (Schneider, Balles, Hennig, ICLR 2019)"
)
MEASURED_SOURCE = "measured: the validation level a tuned Adam reaches within the default budget"
RULE_SOURCE = "rule: round test level reached well within the default budget (provisional)"

# testproblem -> (metric, conv_perf), from deepobs_baselines_v1.1.csv.
DEEPOBS_CONV_PERF: dict[str, tuple[str, float]] = {
    "cifar100_allcnnc": ("accuracy", 0.525604),
    "cifar10_3c3d": ("accuracy", 0.828331),
    "fmnist_2c2d": ("accuracy", 0.919809),
    "fmnist_vae": ("loss", 92.977650),
    "mnist_vae": ("loss", 73.498198),
    "quadratic_deep": ("loss", 87.703155),
    "svhn_wrn164": ("accuracy", 0.950199),
}

# problem -> (metric, level, why that level).
RULE_LEVELS: dict[str, tuple[str, float, str]] = {
    "mnist_logreg": ("accuracy", 0.92, "softmax regression on MNIST tops out near 92-93%"),
    "mnist_mlp": ("accuracy", 0.98, "a 3-hidden-layer ReLU MLP passes 98% on MNIST"),
    "mnist_2c2d": ("accuracy", 0.99, "a two-conv-layer CNN passes 99% on MNIST"),
    "fmnist_mlp": ("accuracy", 0.88, "a ReLU MLP passes 88% on Fashion-MNIST"),
    "cifar100_3c3d": (
        "accuracy",
        0.50,
        "no published figure; below the 52.6% DeepOBS publishes for the larger All-CNN-C",
    ),
    "cifar10_resnet": (
        "accuracy",
        0.90,
        "He et al. (2016) report 91.25% for ResNet-20 (their augmentation and schedule)",
    ),
    "tiny_mlp": ("accuracy", 0.90, "Adam (lr 1e-2) passes 95% test accuracy in one epoch"),
}


def published_target(name: str) -> Target:
    """DeepOBS's published convergence target for ``name`` (test split)."""
    metric, value = DEEPOBS_CONV_PERF[name]
    return Target(metric, value, split="test", source=DEEPOBS_SOURCE)


def rule_target(name: str) -> Target:
    """The documented-rule target for ``name`` (test split)."""
    metric, value, why = RULE_LEVELS[name]
    return Target(metric, value, split="test", source=f"{RULE_SOURCE}: {why}")


_TUNE = "bdhf-bench tune -o adam --grid runners/grids/ci_adam.toml --final-seeds 3"
# problem -> (metric, level, how it was measured). The level is the worst of the three seeds'
# best validation values, rounded toward easier to two digits (accuracy) or 0.5 nats (loss), so
# that a tuned Adam reaches it on every seed within the budget. Measured on the 2-core CPU
# machine this repository is developed on, shared (load average 7 to 8).
MEASURED_TARGETS: dict[str, tuple[str, float, str]] = {
    "mnist1d_mlp": (
        "accuracy",
        0.55,
        f"`{_TUNE} -p mnist1d_mlp --epochs 7 --eval-every 15`: lr 1e-2 selected (of 3e-3, 1e-2, "
        "3e-2), best valid accuracy 0.563, 0.552, 0.564 (seeds 42, 43, 44)",
    ),
    "mnist1d_cnn": (
        "accuracy",
        0.55,
        f"`{_TUNE} -p mnist1d_cnn --epochs 3 --eval-every 15`: lr 3e-2 selected, best valid "
        "accuracy 0.647, 0.553, 0.659",
    ),
    "mnist1d_lstm": (
        "accuracy",
        0.18,
        f"`{_TUNE} -p mnist1d_lstm --epochs 2 --eval-every 5`: lr 3e-3 selected, best valid "
        "accuracy 0.206, 0.184, 0.228 (chance: 0.10; 3 epochs reach 0.259, 0.239, 0.241)",
    ),
    "digits_autoencoder": (
        "loss",
        24.5,
        f"`{_TUNE} -p digits_autoencoder --epochs 8 --eval-every 12`: lr 1e-2 selected, best "
        "valid loss 22.84, 24.37, 23.65 nats per image",
    ),
}


_SUBSET = "--data-dir DIR (the 10,000-digit MNIST subset) --final-seeds 3"
# The paper's two CPU-sized problems (runners/paper_cpu.toml): levels a tuned Adam passes on every
# seed well within the time-to-target suite's budget, on the real MNIST subset; the report reads
# the easier level (125 nats, 80%) off the evaluations.
MEASURED_TARGETS.update(
    {
        "mnist_autoencoder": (
            "loss",
            100.0,
            "`bdhf-bench tune -o adam -p mnist_autoencoder --grid G --steps 2000 --eval-every 50 "
            f"--batch-size 200 {_SUBSET}` with lr in G = 1e-3, 3e-3: lr 1e-3 selected, valid BCE "
            "per image <= 100 first at update 450, 500, 450 (<= 125 at 250 on every seed; best "
            "72.1, 73.9, 72.7); the mean-image plateau is about 206",
        ),
        "smnist_lstm": (
            "accuracy",
            0.90,
            "`bdhf-bench tune -o adam -p smnist_lstm --grid G --steps 2000 --eval-every 50 "
            f"--batch-size 128 {_SUBSET}` with lr in G = 1e-3, 3e-3, 1e-2: lr 3e-3 selected, "
            "valid accuracy >= 0.90 first at update 600, 650, 650 (>= 0.80 at 300; best 0.933, "
            "0.948, 0.942; lr 1e-2 passed 0.90 at 250 on seed 42)",
        ),
    }
)


def measured_target(name: str) -> Target:
    """The measured validation target for ``name``."""
    metric, value, how = MEASURED_TARGETS[name]
    return Target(metric, value, split="valid", source=f"{MEASURED_SOURCE}: {how}")


def target_for(name: str) -> Target:
    """Measured where we measured one, else published where DeepOBS has a figure, else the rule."""
    if name in MEASURED_TARGETS:
        return measured_target(name)
    return published_target(name) if name in DEEPOBS_CONV_PERF else rule_target(name)
