"""Every problem builds, runs forward/backward on its data's shapes, and its pieces (loss, L2,
curvature view) agree with independent computations; the paper's models are what they claim."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bdhf_bench.curvature import GGNContext
from bdhf_bench.data import get_spec, load_splits
from bdhf_bench.problems import get_problem, problem_names, seeded_model
from bdhf_bench.problems.autoencoder import deep_autoencoder
from bdhf_bench.problems.deepobs_losses import quadratic_hessian
from bdhf_bench.problems.paper import mnist_autoencoder
from bdhf_bench.problems.resnet import CifarResNet

BATCH = 3


@functools.lru_cache
def _batch(dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    splits = load_splits(dataset, source="synthetic", seed=0, synthetic_sizes=(40, 10))
    x, y = splits.train
    return x[:BATCH], y[:BATCH]


def _expected_output_shapes(name: str) -> list[tuple[int, ...]]:
    problem = get_problem(name)
    if name.endswith("_vae"):
        return [(BATCH, 1, 28, 28), (BATCH, 8), (BATCH, 8)]
    if name == "quadratic_deep":
        return [(BATCH, 100)]
    if name.startswith("mnist_autoencoder"):
        return [(BATCH, 784)]
    if name == "digits_autoencoder":
        return [(BATCH, 64)]
    return [(BATCH, get_spec(problem.dataset).num_classes)]


@pytest.mark.parametrize("name", problem_names())
def test_forward_backward_and_objective(name: str) -> None:
    problem = get_problem(name)
    model = seeded_model(problem, 0)
    inputs, targets = problem.prepare_batch(*_batch(problem.dataset))
    outputs = model(inputs)
    shapes = [tuple(o.shape) for o in (outputs if isinstance(outputs, tuple) else (outputs,))]
    assert shapes == _expected_output_shapes(name)
    l2 = problem.l2_coefficients(model)
    value = problem.objective(model, outputs, targets, l2)
    penalty = sum(
        0.5 * c * float(p.detach().square().sum()) for p, c in zip(model.parameters(), l2)
    )
    expected = float(problem.loss(outputs, targets).detach()) + penalty
    assert float(value.detach()) == pytest.approx(expected, rel=1e-5)
    assert torch.isfinite(value)
    value.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    if problem.metric == "accuracy":
        correct = problem.correct(outputs, targets)
        assert correct.dim() == 0 and 0 <= int(correct) <= BATCH


@pytest.mark.parametrize("name", problem_names())
def test_curvature_engine_sees_a_psd_ggn(name: str) -> None:
    """One GGN product through each problem's model and loss: finite and v^T G v >= 0."""
    problem = get_problem(name)
    model = seeded_model(problem, 0)
    inputs, targets = problem.prepare_batch(*_batch(problem.dataset))
    ctx = GGNContext.from_model(
        model, inputs, targets, problem.loss, l2=problem.l2_coefficients(model)
    )
    gen = torch.Generator().manual_seed(1)
    v = [torch.randn(p.shape, generator=gen) for p in model.parameters()]
    gv = ctx.mvp(v)
    assert all(torch.isfinite(t).all() for t in gv)
    assert sum(float((a * b).sum()) for a, b in zip(v, gv)) >= -1e-4


def test_quadratic_ggn_is_exactly_its_hessian() -> None:
    problem = get_problem("quadratic_deep")
    model = seeded_model(problem, 0)
    x = torch.randn(16, 100)
    ctx = GGNContext.from_model(model, x, torch.zeros(16, dtype=torch.long), problem.loss)
    v = torch.randn(100)
    torch.testing.assert_close(ctx.mvp([v])[0], quadratic_hessian() @ v, rtol=1e-5, atol=1e-5)
    # and the loss is 0.5 (theta - x)^T Q (theta - x), batch mean
    q = torch.ones(100) - x
    expected = 0.5 * torch.einsum("ni,ij,nj->n", q, quadratic_hessian(), q).mean()
    torch.testing.assert_close(problem.loss(model(x), None), expected)


def test_cifar10_3c3d_has_deepobs_parameter_count() -> None:
    model = get_problem("cifar10_3c3d").make_model()
    assert sum(p.numel() for p in model.parameters()) == 895_210


# -- the deep autoencoder ------------------------------------------------------------------------


def test_autoencoder_architecture() -> None:
    net = deep_autoencoder("pytorch")
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [
        (1000, 784), (500, 1000), (250, 500), (30, 250),
        (250, 30), (500, 250), (1000, 500), (784, 1000),
    ]  # fmt: skip
    kinds = [type(m).__name__ for m in net]
    # sigmoid after every layer except the 30-unit code and the output logits
    assert kinds[kinds.index("Linear") :] == [
        "Linear", "Sigmoid", "Linear", "Sigmoid", "Linear", "Sigmoid", "Linear",
        "Linear", "Sigmoid", "Linear", "Sigmoid", "Linear", "Sigmoid", "Linear",
    ]  # fmt: skip


def test_autoencoder_sparse_init_is_martens() -> None:
    torch.manual_seed(0)
    net = get_problem("mnist_autoencoder").make_model()
    weights = []
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nonzero = (m.weight != 0).sum(dim=1)
            assert torch.all(nonzero == min(15, m.in_features))
            assert torch.all(m.bias == 0)
            weights.append(m.weight[m.weight != 0])
    values = torch.cat(weights)
    values = values.detach()
    assert abs(float(values.mean())) < 0.02 and abs(float(values.std()) - 1) < 0.02
    dense = mnist_autoencoder("pytorch")
    assert dense.name == "mnist_autoencoder_pytorchinit"
    assert bool((dense.make_model()[1].weight != 0).all())
    with pytest.raises(ValueError, match="unknown autoencoder init 'xavier'"):
        mnist_autoencoder("xavier")


def test_autoencoder_loss_is_bce_per_image_against_the_pixels() -> None:
    problem = get_problem("mnist_autoencoder")
    x, y = _batch("mnist")
    inputs, targets = problem.prepare_batch(x, y)
    assert inputs is x and torch.equal(targets, x.reshape(BATCH, 784))
    logits = torch.randn(BATCH, 784)
    expected = F.binary_cross_entropy(torch.sigmoid(logits), targets, reduction="sum") / BATCH
    torch.testing.assert_close(problem.loss(logits, targets), expected, rtol=1e-4, atol=1e-4)


# -- the LSTM ------------------------------------------------------------------------------------


def test_smnist_lstm_equals_torch_lstm_on_the_last_step() -> None:
    model = seeded_model(get_problem("smnist_lstm"), 0)
    reference = nn.LSTM(7, 128, num_layers=3, batch_first=True)
    with torch.no_grad():
        for k, layer in enumerate(model.lstm.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(reference, f"{name}_l{k}").copy_(getattr(layer, name))
    x = torch.rand(5, 7, 7)
    hidden, _ = reference(x)
    torch.testing.assert_close(model(x), model.fc(hidden[:, -1]), rtol=1e-5, atol=1e-5)


def test_smnist_lstm_ggn_products_are_symmetric_on_cpu() -> None:
    problem = get_problem("smnist_lstm")
    model = seeded_model(problem, 0)
    x, y = _batch("smnist")
    ctx = GGNContext.from_model(model, x, y, problem.loss)
    gen = torch.Generator().manual_seed(0)
    u = [torch.randn(p.shape, generator=gen) for p in model.parameters()]
    v = [torch.randn(p.shape, generator=gen) for p in model.parameters()]
    ugv = sum(float((a * b).sum()) for a, b in zip(u, ctx.mvp(v)))
    vgu = sum(float((a * b).sum()) for a, b in zip(v, ctx.mvp(u)))
    assert ugv == pytest.approx(vgu, rel=1e-4)


# -- the ResNet ----------------------------------------------------------------------------------


def test_resnet20_is_he_et_al_cifar_resnet() -> None:
    model = get_problem("cifar10_resnet").make_model()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == 20  # 19 convolutions and the classifier
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 19
    assert [c.out_channels for c in convs] == [16] * 7 + [32] * 6 + [64] * 6
    assert sum(p.numel() for p in model.parameters()) == 269_722  # "0.27M" in He et al. 2016
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(depth=21)


def test_resnet_l2_is_on_weights_only() -> None:
    problem = get_problem("cifar10_resnet")
    model = problem.make_model()
    for (name, p), c in zip(model.named_parameters(), problem.l2_coefficients(model)):
        assert c == (1e-4 if p.dim() > 1 else 0.0), name
