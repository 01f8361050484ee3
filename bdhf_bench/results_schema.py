"""The result file's schema (docs/results.md), in one place: the runner writes with these names
and the report reads with them. No imports, so both sides (and DeepOBS's analyzer glue) can
use it without torch or pandas.

A result file is DeepOBS's own JSON (the keys its analyzer reads) plus ours: a
``schema_version``, a ``status``, the ``evaluations`` records, ``steps`` and ``train_seconds``.
"""

SCHEMA_VERSION = 1
"""What the runner writes."""
SCHEMA_VERSIONS = (1,)
"""What the report reads."""

KIND_OURS = "bdhf-bench"
KIND_DEEPOBS = "deepobs"
"""A file with our keys, and one with only DeepOBS's (read in a reduced form)."""

STATUSES = ("finished", "diverged")
METRICS = ("accuracy", "loss")

EVAL_SPLITS = (("train", "train_eval"), ("valid", "valid"), ("test", "test"))
"""(key prefix, the problem's split): the train loss is measured on DeepOBS's train_eval set."""
TARGET_SPLITS = ("train", "train_eval", "valid", "test")
"""Splits a target may name: the problems' names, and plain "train"."""

IDENTITY_KEYS = (
    "testproblem",
    "batch_size",
    "num_epochs",
    "random_seed",
    "optimizer_name",
    "optimizer_hyperparams",
)
"""What names a run in DeepOBS's format, and in ours."""

RUN_KEYS = (
    *IDENTITY_KEYS,
    "status",
    "evaluations",
    "steps",
    "train_seconds",
)
"""Top-level keys a schema-1 file must have (``schema_version`` aside)."""

COUNTER_KEYS = ("forward_passes", "backward_passes", "curvature_products", "gradient_equivalents")
LOSS_KEYS = tuple(f"{key}_loss" for key, _ in EVAL_SPLITS)
ACCURACY_KEYS = tuple(f"{key}_accuracy" for key, _ in EVAL_SPLITS)
EVAL_KEYS = ("epoch", "step", "train_seconds", *COUNTER_KEYS, *LOSS_KEYS)
"""Keys every evaluation record has; accuracies and ``minibatch_loss`` may be absent."""
REACHED_KEYS = ("step", "epoch", "train_seconds", "gradient_equivalents")
"""Where a run first reached its target (``target.reached``)."""

DEEPOBS_KEYS = (
    *IDENTITY_KEYS,
    "train_losses",
    "valid_losses",
    "test_losses",
)
"""What DeepOBS's own runner writes (and its analyzer reads)."""
DEEPOBS_ACCURACY_LISTS = ("train_accuracies", "valid_accuracies", "test_accuracies")
