"""The problem registry: names, lookup errors, registration, entry points, defaults, targets."""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
from deepobs.config import DEFAULT_TEST_PROBLEMS_SETTINGS

from bdhf_bench.problems import Problem, get_problem, problem_names, register, registry
from bdhf_bench.problems.targets import DEEPOBS_CONV_PERF, MEASURED_TARGETS

DEEPOBS = [
    "mnist_logreg", "mnist_mlp", "mnist_2c2d", "mnist_vae", "fmnist_mlp", "fmnist_2c2d",
    "fmnist_vae", "cifar10_3c3d", "cifar100_3c3d", "cifar100_allcnnc", "svhn_wrn164",
    "quadratic_deep",
]  # fmt: skip
PAPER = ["mnist_autoencoder", "smnist_lstm", "cifar10_resnet"]
BASELINES = Path(__file__).resolve().parents[1] / "baselines" / "deepobs_baselines_v1.1.csv"


@pytest.fixture
def fresh_registry():
    """A registry rebuilt from scratch, and rebuilt again afterwards (entry points restored)."""
    registry.forget_registered()
    yield
    registry.forget_registered()


def test_every_issue_problem_is_registered() -> None:
    names = problem_names()
    assert set(DEEPOBS + PAPER + ["tiny_mlp"]) <= set(names)
    assert names == sorted(names)
    assert all(get_problem(n).name == n for n in names)


def test_unknown_name_suggests_close_ones_in_one_line() -> None:
    with pytest.raises(ValueError) as info:
        get_problem("mnist_mpl")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("unknown problem 'mnist_mpl' (did you mean mnist_mlp")
    assert "valid: " in message and "cifar10_3c3d" in message and "tiny_mlp" in message


def test_register_adds_and_refuses_duplicates(fresh_registry) -> None:
    extra = dataclasses.replace(get_problem("tiny_mlp"), name="tiny_mlp_copy")
    assert register(extra) is extra
    assert get_problem("tiny_mlp_copy") is extra
    with pytest.raises(ValueError, match="already registered"):
        register(dataclasses.replace(extra))
    register(dataclasses.replace(extra, batch_size=7), replace=True)
    assert get_problem("tiny_mlp_copy").batch_size == 7
    with pytest.raises(ValueError, match="takes a Problem"):
        register("tiny_mlp")  # type: ignore[arg-type]


class _EntryPoint:
    def __init__(self, name: str, obj: object) -> None:
        self.name, self.obj = name, obj

    def load(self) -> object:
        if isinstance(self.obj, Exception):
            raise self.obj
        return self.obj


def test_third_party_problems_come_through_entry_points(
    fresh_registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = get_problem("tiny_mlp")
    registry.forget_registered()
    one = dataclasses.replace(base, name="plugin_one")
    many = [dataclasses.replace(base, name=f"plugin_many_{i}") for i in range(2)]
    points = {
        "bdhf_bench.problems": [
            _EntryPoint("one", one),
            _EntryPoint("factory", lambda: many),
            _EntryPoint("broken", ImportError("no module named nowhere")),
        ]
    }
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: points.get(group, []))
    with pytest.warns(UserWarning, match="skipping bdhf_bench.problems entry point 'broken'"):
        names = problem_names()
    assert {"plugin_one", "plugin_many_0", "plugin_many_1"} <= set(names)
    assert get_problem("plugin_one") is one
    assert "mnist_mlp" in names  # the built-ins are still there


def test_a_plugin_problem_named_like_a_built_in_is_skipped_with_a_warning(
    fresh_registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    builtin = get_problem("tiny_mlp")
    registry.forget_registered()
    impostor = dataclasses.replace(builtin, batch_size=1)
    points = {"bdhf_bench.problems": [_EntryPoint("tiny", impostor)]}
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: points.get(group, []))
    with pytest.warns(
        UserWarning, match="skipping the bdhf_bench.problems plugin entry 'tiny_mlp'"
    ):
        names = problem_names()
    assert "mnist_mlp" in names and get_problem("tiny_mlp") is not impostor


@pytest.mark.parametrize("name", DEEPOBS)
def test_deepobs_default_batch_size_and_epochs(name: str) -> None:
    problem = get_problem(name)
    expected = DEFAULT_TEST_PROBLEMS_SETTINGS.get(name, {"batch_size": 128, "num_epochs": 100})
    assert (problem.batch_size, problem.num_epochs) == (
        expected["batch_size"],
        expected["num_epochs"],
    )


def test_cifar100_3c3d_has_documented_settings_deepobs_lacks() -> None:
    assert "cifar100_3c3d" not in DEFAULT_TEST_PROBLEMS_SETTINGS
    problem = get_problem("cifar100_3c3d")
    assert (problem.batch_size, problem.num_epochs) == (128, 100)
    assert any("no default settings" in note for note in problem.notes)


def test_published_targets_are_deepobs_conv_perf_on_test() -> None:
    with open(BASELINES, newline="") as f:
        published = {row["testproblem"]: row for row in csv.DictReader(f)}
    for name, (metric, value) in DEEPOBS_CONV_PERF.items():
        target = get_problem(name).target
        assert (target.metric, target.value) == (metric, value)
        assert target is not None and target.split == "test"
        assert target.value == pytest.approx(float(published[name]["conv_perf"]), abs=1e-6)
        assert target.metric == (
            "accuracy" if "accuracies" in published[name]["metric"] else "loss"
        )
        assert "DeepOBS" in target.source and "ICLR 2019" in target.source
    in_csv = {n for n in published if n in problem_names()}
    assert in_csv == set(DEEPOBS_CONV_PERF)  # every problem with a published target uses it


def test_every_other_problem_has_a_measured_or_rule_target() -> None:
    for name in problem_names():
        problem = get_problem(name)
        assert problem.target is not None, name
        assert problem.target.metric == problem.metric
        if name in MEASURED_TARGETS:
            # AlgoPerf's way: the validation split, the measurement in the source
            assert problem.target.split == "valid", name
            assert problem.target.source.startswith("measured:"), name
            assert "bdhf-bench tune" in problem.target.source, name
        elif name not in DEEPOBS_CONV_PERF:
            assert problem.target.source.startswith("rule:"), name


def test_problems_are_plain_frozen_data() -> None:
    problem = get_problem("mnist_mlp")
    assert isinstance(problem, Problem)
    with pytest.raises(dataclasses.FrozenInstanceError):
        problem.batch_size = 1  # type: ignore[misc]


def test_settings_read_without_importing_deepobs_match_deepobs_config() -> None:
    """Listing problems reads DeepOBS's config.py on its own (its package imports the analyzer,
    ~3 s per process): the values must be the package's."""
    code = (
        "import json, sys\n"
        "from bdhf_bench.problems import get_problem\n"
        f"names = {DEEPOBS!r}\n"
        "out = {n: [get_problem(n).batch_size, get_problem(n).num_epochs] for n in names}\n"
        "out['deepobs imported'] = 'deepobs' in sys.modules\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    read = json.loads(done.stdout)
    assert read.pop("deepobs imported") is False
    default = {"batch_size": 128, "num_epochs": 100}
    for name in DEEPOBS:
        expected = DEFAULT_TEST_PROBLEMS_SETTINGS.get(name, default)
        assert read[name] == [expected["batch_size"], expected["num_epochs"]], name
