"""The keys docs/results.md promises in every result file: what the runner must write and what
the report may rely on. Both sides' tests check against these sets."""

from __future__ import annotations

DEEPOBS_KEYS = {
    "testproblem",
    "batch_size",
    "num_epochs",
    "random_seed",
    "weight_decay",
    "optimizer_name",
    "optimizer_hyperparams",
    "training_params",
    "train_losses",
    "valid_losses",
    "test_losses",
    "train_accuracies",
    "valid_accuracies",
    "test_accuracies",
    "minibatch_train_losses",
}
OUR_KEYS = {
    "schema_version",
    "status",
    "budget",
    "evaluations",
    "target",
    "cost_model",
    "data",
    "environment",
    "steps",
    "train_seconds",
    "diverged_at",
}
EVAL_KEYS = {
    "epoch",
    "step",
    "train_seconds",
    "forward_passes",
    "backward_passes",
    "curvature_products",
    "gradient_equivalents",
    "train_loss",
    "valid_loss",
    "test_loss",
    "train_accuracy",
    "valid_accuracy",
    "test_accuracy",
    "minibatch_loss",
    "optimizer",
}
