"""Static facts about each data set: shapes, classes, standard split sizes, normalisation.

One table, read by the readers, the split logic, the synthetic generator and the augmentation, so
that a data set is described in exactly one place. Sizes and normalisation constants of DeepOBS's
data sets are DeepOBS 1.2.0b0's (``deepobs.pytorch.datasets``): validation is carved out of the
training file with the size of the test set (DeepOBS's ``train_eval_size``), and train_eval is a
subset of train of that same size. The packaged data sets (MNIST-1D, digits) are split the same
way.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..plugins import unknown_name_message


@dataclass(frozen=True)
class DatasetSpec:
    """What one data set looks like once loaded (model-ready tensors)."""

    name: str
    input_shape: tuple[int, ...]
    """Shape of one model input (without the batch dimension)."""
    num_classes: int
    """Label range ``0 .. num_classes - 1`` (0 for unlabelled data such as the quadratic)."""
    train_file_size: int
    """Examples in the standard training file (before validation is carved out)."""
    test_size: int
    valid_size: int
    """DeepOBS's ``train_eval_size``: the validation split and the train_eval subset."""
    mean: tuple[float, ...] | None = None
    """Per-channel normalisation (DeepOBS's ``transforms.Normalize``); None: pixels in [0, 1]."""
    std: tuple[float, ...] | None = None
    augmentation: str = "none"
    """DeepOBS's training augmentation: "none", "cifar" (pad 2, crop 32, flip, colour jitter) or
    "svhn" (the same without the flip)."""
    carved_valid: bool = True
    """False: DeepOBS draws the validation set separately (the quadratic), nothing is carved."""

    @property
    def standard_sizes(self) -> dict[str, int]:
        if not self.carved_valid:
            n = self.train_file_size
            return {"train": n, "train_eval": n, "valid": self.valid_size, "test": self.test_size}
        return {
            "train": self.train_file_size - self.valid_size,
            "train_eval": self.valid_size,
            "valid": self.valid_size,
            "test": self.test_size,
        }


_CIFAR10_MEAN = (0.49139968, 0.48215841, 0.44653091)
_CIFAR10_STD = (0.24703223, 0.24348513, 0.26158784)
_CIFAR100_MEAN = (0.50707516, 0.48654887, 0.44091784)
_CIFAR100_STD = (0.26733429, 0.25643846, 0.27615047)
_SVHN_MEAN = (0.4376821, 0.4437697, 0.47280442)
_SVHN_STD = (0.19803012, 0.20101562, 0.19703614)

SPECS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("mnist", (1, 28, 28), 10, 60000, 10000, 10000),
        DatasetSpec("fmnist", (1, 28, 28), 10, 60000, 10000, 10000),
        DatasetSpec(
            "cifar10", (3, 32, 32), 10, 50000, 10000, 10000, _CIFAR10_MEAN, _CIFAR10_STD, "cifar"
        ),
        DatasetSpec(
            "cifar100",
            (3, 32, 32),
            100,
            50000,
            10000,
            10000,
            _CIFAR100_MEAN,
            _CIFAR100_STD,
            "cifar",
        ),
        # DeepOBS's svhn uses train_eval_size=26032 (the test set) and no "extra" images.
        DatasetSpec("svhn", (3, 32, 32), 10, 73257, 26032, 26032, _SVHN_MEAN, _SVHN_STD, "svhn"),
        # MNIST average-pooled 28x28 -> 7x7, read row by row: 7 time steps of 7 features.
        DatasetSpec("smnist", (7, 7), 10, 60000, 10000, 10000),
        # DeepOBS's noisy quadratic: 1000 draws each for train, valid and test (no labels).
        DatasetSpec("quadratic", (100,), 0, 1000, 1000, 1000, carved_valid=False),
        # MNIST-1D (Greydanus 2020): 4,000 training and 1,000 test sequences of 40 points, built
        # by the mnist1d package's generator (data/packaged.py); validation carved as DeepOBS does.
        DatasetSpec("mnist1d", (40,), 10, 4000, 1000, 1000),
        # scikit-learn's 8x8 digits, 64 pixels in [0, 1]: 1,797 images, of which a fixed carve
        # makes 297 the test file and 1,500 the training file (data/packaged.py); valid 300.
        DatasetSpec("digits", (64,), 10, 1500, 297, 300),
        # A tiny 4-class problem in 8 dimensions, generated, for CI and smoke tests.
        DatasetSpec("tiny", (8,), 4, 1200, 200, 200),
    )
}


def get_spec(dataset: str) -> DatasetSpec:
    """The spec of ``dataset``; an unknown name raises ValueError naming the valid ones."""
    try:
        return SPECS[dataset]
    except KeyError:
        raise ValueError(unknown_name_message("data set", str(dataset), SPECS)) from None


def dataset_names() -> list[str]:
    """Every data set ``load_splits`` knows."""
    return sorted(SPECS)
