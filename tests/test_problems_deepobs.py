"""Our DeepOBS problems against DeepOBS itself: its own ``set_up()`` on tiny data files in the real
formats (torchvision's checksums patched to accept them), then the same nets and initialisation,
the same loss values, the same L2 penalty and the same preprocessed test images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import deepobs.config
import deepobs.pytorch.config
import deepobs.pytorch.testproblems as deepobs_problems
import pytest
import torch
import torchvision.datasets as tvd
from test_data_fixtures import write_cifar10, write_cifar100, write_mnist, write_svhn

from bdhf_bench.data import load_splits
from bdhf_bench.data.download import md5_of
from bdhf_bench.problems import get_problem, seeded_model
from bdhf_bench.problems.deepobs_losses import quadratic_hessian

DATASET_OF = {
    "mnist_logreg": "mnist", "mnist_mlp": "mnist", "mnist_2c2d": "mnist", "mnist_vae": "mnist",
    "fmnist_mlp": "fmnist", "fmnist_2c2d": "fmnist", "fmnist_vae": "fmnist",
    "cifar10_3c3d": "cifar10", "cifar100_3c3d": "cifar100", "cifar100_allcnnc": "cifar100",
    "svhn_wrn164": "svhn", "quadratic_deep": "quadratic",
}  # fmt: skip
BATCH = 4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder with every data set as tiny files, the layout DeepOBS/torchvision expect."""
    root = tmp_path_factory.mktemp("data_deepobs")
    write_mnist(root / "MNIST" / "raw", 40, 12, gz=False)
    write_mnist(root / "FashionMNIST" / "raw", 40, 12, gz=False, seed=9)
    write_cifar10(root, per_batch=8, n_test=12)
    write_cifar100(root, n_train=40, n_test=12)
    write_svhn(root, n_train=40, n_test=12)
    return root


@pytest.fixture
def deepobs_on(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DeepOBS pointed at the tiny files, on the CPU, with torchvision trusting their MD5s."""
    monkeypatch.setattr(deepobs.config, "DATA_DIR", str(data_dir))
    monkeypatch.setattr(deepobs.pytorch.config, "DEFAULT_DEVICE", "cpu")
    for cls, folder in ((tvd.CIFAR10, "cifar-10-batches-py"), (tvd.CIFAR100, "cifar-100-python")):
        for attr in ("train_list", "test_list"):
            entries = [[n, md5_of(data_dir / folder / n)] for n, _ in getattr(cls, attr)]
            monkeypatch.setattr(cls, attr, entries)
        meta = dict(cls.meta, md5=md5_of(data_dir / folder / cls.meta["filename"]))
        monkeypatch.setattr(cls, "meta", meta)
    splits = {
        k: [*v[:2], md5_of(data_dir / v[1])] for k, v in tvd.SVHN.split_list.items() if k != "extra"
    }
    monkeypatch.setattr(tvd.SVHN, "split_list", splits)
    return data_dir


def _deepobs_problem(name: str, seed: int):
    cls = getattr(deepobs_problems, name)
    problem = cls(BATCH)
    torch.manual_seed(seed)
    problem.set_up()
    return problem


def _test_batch(tproblem) -> tuple[torch.Tensor, ...]:
    tproblem.test_init_op()
    return next(iter(tproblem.data._test_dataloader))


@pytest.mark.parametrize("name", sorted(DATASET_OF))
def test_same_net_and_initialisation_as_deepobs(deepobs_on: Path, name: str) -> None:
    theirs = _deepobs_problem(name, seed=3).net
    ours = seeded_model(get_problem(name), 3)
    ours_named = dict(ours.named_parameters())
    theirs_named = dict(theirs.named_parameters())
    assert list(ours_named) == list(theirs_named)
    for key, p in theirs_named.items():
        assert ours_named[key].shape == p.shape, key
        assert torch.equal(ours_named[key].detach(), p.detach().cpu()), key


@pytest.mark.filterwarnings("ignore:.*splits scaled down:UserWarning")
@pytest.mark.parametrize("name", sorted(DATASET_OF))
def test_same_loss_penalty_and_test_images_as_deepobs(deepobs_on: Path, name: str) -> None:
    problem = get_problem(name)
    tproblem = _deepobs_problem(name, seed=0)
    net = tproblem.net.eval()
    # DeepOBS's own unaugmented test pipeline vs our test split, same order
    batch = _test_batch(tproblem)
    splits = load_splits(problem.dataset, data_dir=deepobs_on, download=False)
    torch.testing.assert_close(splits.test[0][:BATCH], batch[0], atol=1e-6, rtol=0)
    if len(batch) > 1:
        assert torch.equal(splits.test[1][:BATCH], batch[1])
    inputs, targets = problem.prepare_batch(*splits.test)
    ours = seeded_model(problem, 0).eval()
    ours.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.manual_seed(1)
        outputs = ours(inputs[:BATCH])
        if name.endswith("_vae"):
            reference = tproblem.loss_function(reduction="mean")(
                outputs[0], inputs[:BATCH], *outputs[1:]
            )
        elif name == "quadratic_deep":
            theirs = deepobs_problems.testproblems_modules.net_quadratic_deep(
                100, quadratic_hessian()
            )
            reference = theirs(inputs[:BATCH]).mean()
        else:
            reference = tproblem.loss_function(reduction="mean")(outputs, targets[:BATCH])
        torch.testing.assert_close(problem.loss(outputs, targets[:BATCH]), reference)
    # L2: our coefficients on our model give DeepOBS's regularization loss on its net
    for p in net.parameters():
        p.data.normal_()
    ours.load_state_dict(net.state_dict())
    l2 = problem.l2_coefficients(ours)
    penalty = sum(0.5 * c * p.square().sum() for p, c in zip(ours.parameters(), l2) if c)
    torch.testing.assert_close(
        torch.as_tensor(penalty, dtype=torch.float32),
        torch.as_tensor(tproblem.get_regularization_loss(), dtype=torch.float32),
    )


def test_weight_decay_reaches_deepobs_groups() -> None:
    problem = get_problem("svhn_wrn164")
    model = problem.make_model()
    coeffs = dict(
        zip((n for n, _ in model.named_parameters()), problem.l2_coefficients(model, 0.01))
    )
    assert coeffs["conv1.1.weight"] == 0.01 and coeffs["dense.weight"] == 0.01
    assert coeffs["dense.bias"] == 0.0 and coeffs["res_unit11.bn1.weight"] == 0.0
    assert set(
        get_problem("mnist_mlp").l2_coefficients(
            model=get_problem("mnist_mlp").make_model(), weight_decay=0.1
        )
    ) == {0.0}


def test_wrn_batchnorm_momentum_is_torch_meaning_of_tf_09(deepobs_on: Path) -> None:
    theirs = _deepobs_problem("svhn_wrn164", seed=0).net
    ours = get_problem("svhn_wrn164").make_model()
    assert {m.momentum for m in theirs.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.9}
    assert {m.momentum for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}


_FIRST_SETUP = """
import torch, deepobs.pytorch.config as c
c.set_default_device("cpu")
from deepobs.pytorch.testproblems import quadratic_deep
p = quadratic_deep(1); p.set_up()
torch.save(p.net.Hessian.cpu(), {path!r})
"""


def test_quadratic_hessian_is_deepobs_first_setup_every_time(tmp_path: Path) -> None:
    path = str(tmp_path / "hessian.pt")
    subprocess.run([sys.executable, "-c", _FIRST_SETUP.format(path=path)], check=True)
    first = torch.load(path)
    # in this process DeepOBS's own set_up would now give another matrix; ours never changes
    again = deepobs_problems.quadratic_deep(1)
    again.set_up()
    again.set_up()
    assert not torch.allclose(again.net.Hessian.cpu(), first)
    torch.testing.assert_close(quadratic_hessian(), first)
    torch.testing.assert_close(get_problem("quadratic_deep").loss.fn.hessian, first)
