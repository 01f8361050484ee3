"""BDHF's design space: the block schemes against hand-written partitions of the paper's models,
the glob schemes' one-line errors, the step with and without the full-GGN rescale against a
dense block-diagonal Newton step, and the options through the registry and a TOML grid."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from dense_reference import dense_ggn
from torch import nn

from bdhf_bench.curvature import CrossEntropy, check_scheme, parse_groups, partition
from bdhf_bench.optim import BlockDiagonalHF, ModelClosure, get_optimizer, param_groups_from_blocks
from bdhf_bench.problems import get_problem, seeded_model
from bdhf_bench.runner.suite import load_suite
from bdhf_bench.runner.tune import GridFileError, grid_settings, load_grid_file


def _names(model: nn.Module, scheme) -> list[list[str]]:
    """The partition as lists of parameter names (the oracle is written in names)."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [[name_of[id(p)] for p in b.params] for b in partition(model, scheme)]


def _layer(*indices: int) -> list[str]:
    return [f"{i}.{kind}" for i in indices for kind in ("weight", "bias")]


@pytest.fixture(scope="module")
def autoencoder():
    # nn.Sequential(Flatten, Linear, Sigmoid, ...): the Linears sit at 1 3 5 7 | 8 10 12 14
    return seeded_model(get_problem("mnist_autoencoder"), 0, torch.device("cpu"))


@pytest.fixture(scope="module")
def lstm():
    return seeded_model(get_problem("smnist_lstm"), 0, torch.device("cpu"))


# -- partitions ----------------------------------------------------------------------------------


def test_autoencoder_schemes_are_the_hand_written_partitions(autoencoder):
    linears = (1, 3, 5, 7, 8, 10, 12, 14)
    assert _names(autoencoder, "module") == [_layer(i) for i in linears]
    assert _names(autoencoder, "pairs") == [
        _layer(1, 3),
        _layer(5, 7),
        _layer(8, 10),
        _layer(12, 14),
    ]
    # encoder 784-1000-500-250-30, decoder 30-250-500-1000-784
    assert _names(autoencoder, "halves") == [_layer(1, 3, 5, 7), _layer(8, 10, 12, 14)]
    assert _names(autoencoder, "tensor") == [[n] for n in _layer(*linears)]
    assert _names(autoencoder, "all") == [_layer(*linears)]
    assert [b.name for b in partition(autoencoder, "pairs")] == ["1+3", "5+7", "8+10", "12+14"]
    globs = "code=7.*,8.*; rest=1.*,3.*,5.*,1?.*"
    assert _names(autoencoder, globs) == [_layer(7, 8), _layer(1, 3, 5, 10, 12, 14)]
    assert [b.name for b in partition(autoencoder, globs)] == ["code", "rest"]


def test_lstm_schemes_keep_each_layer_whole(lstm):
    def layer(i):
        return [f"lstm.layers.{i}.{k}" for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

    fc = ["fc.weight", "fc.bias"]
    assert _names(lstm, "module") == [layer(0), layer(1), layer(2), fc]
    assert _names(lstm, "pairs") == [layer(0) + layer(1), layer(2) + fc]
    assert _names(lstm, "halves") == [layer(0) + layer(1), layer(2) + fc]


def test_odd_layer_counts():
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1))
    assert _names(net, "pairs") == [_layer(0, 2), _layer(4)]
    assert _names(net, "halves") == [_layer(0, 2), _layer(4)]  # the first half takes the middle
    single = nn.Linear(2, 1)
    assert _names(single, "pairs") == _names(single, "halves") == [["weight", "bias"]]


# -- glob schemes and their errors -----------------------------------------------------------------


def test_parse_groups_and_canonical_form():
    assert parse_groups("enc=1.*,3.*;dec=5.*") == {"enc": ["1.*", "3.*"], "dec": ["5.*"]}
    assert check_scheme(" enc = 1.* , 3.* ; dec=5.* ") == "enc=1.*,3.*;dec=5.*"
    assert check_scheme("pairs") == "pairs"


@pytest.mark.parametrize(
    ("scheme", "message"),
    [
        ("layers", r"unknown block scheme 'layers'; valid: module, tensor, all, pairs, halves"),
        ("enc=1.*;;dec=5.*", r"has an empty block"),
        ("enc=1.*;dec", r"block 'dec' of scheme .* needs the form name=glob,glob"),
        ("enc=1.*;enc=3.*", r"block 'enc' appears twice"),
        ("e c=1.*", r"block name 'e c' .* must be letters, digits, _ or -"),
        ("enc=1.*,", r"glob '' of block 'enc'"),
        ("enc=../1.*", r"glob '../1.\*' of block 'enc'"),
    ],
)
def test_malformed_schemes_are_one_line_errors(scheme, message):
    with pytest.raises(ValueError, match=message) as info:
        check_scheme(scheme)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("scheme", "message"),
    [
        ("enc=1.*,3.*,5.*,7.*", r"parameters in no block: 8.weight, 8.bias, 10.weight"),
        ("a=1.*,3.*,5.*,7.*;b=7.*,8.*,1?.*", r"parameter '7.weight' matches blocks 'a' and 'b'"),
        ("a=1.*,3.*,5.*,7.*,9.*;b=8.*,1?.*", r"glob '9.\*' of block 'a' matches no trainable"),
    ],
)
def test_globs_must_cover_every_parameter_once(autoencoder, scheme, message):
    with pytest.raises(ValueError, match=message) as info:
        partition(autoencoder, scheme)
    assert "\n" not in str(info.value)


def test_frozen_parameters_need_no_block():
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    net[0].requires_grad_(False)
    assert _names(net, "last=2.*") == [_layer(2)]
    assert _names(net, "halves") == [_layer(2)]


# -- the step with and without the rescale ---------------------------------------------------------


def _net_and_data():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 3))
    g = torch.Generator().manual_seed(4)
    return net, torch.randn(30, 4, generator=g), torch.randint(0, 3, (30,), generator=g)


def _flat(tensors):
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _dense(net, x, y):
    big = dense_ggn(net, x, lambda out: F.cross_entropy(out, y))
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    return big, _flat([p.grad for p in net.parameters()])


def _loss(net, x, y) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(net(x), y))


def _block_diagonal(big: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    out, i = torch.zeros_like(big), 0
    for n in sizes:
        out[i : i + n, i : i + n] = big[i : i + n, i : i + n]
        i += n
    return out


def _one_step(net, x, y, lam, scheme, rescale, damping_mode="global", combine="scale", **more):
    opt = BlockDiagonalHF(
        param_groups_from_blocks(partition(net, scheme)),
        damping=lam,
        damping_start="fixed",  # the dense reference damps with lam itself
        damping_mode=damping_mode,
        rescale=rescale,
        combine=combine,
        **more,
        curvature_fraction=1.0,
        warm_start=0.0,
        cg_max_iters=200,
        cg_tol=1e-14,
        step_rule="fixed",
    )
    opt.step(ModelClosure(net, CrossEntropy(), x, y))
    return opt.last_step


@pytest.mark.parametrize("scheme", ["module", "pairs", "tensor"])
def test_rescale_off_is_the_block_diagonal_newton_step_and_on_scales_it(float64, scheme):
    net, x, y = _net_and_data()
    lam = 0.03
    theta = _flat(net.parameters())
    big, g = _dense(net, x, y)
    sizes = [sum(p.numel() for p in b.params) for b in partition(net, scheme)]
    assert len(sizes) > 1
    bd = _block_diagonal(big, sizes)
    d = torch.linalg.solve(bd + lam * torch.eye(len(g)), -g)
    f0 = _loss(net, x, y)

    off = _one_step(net, x, y, lam, scheme, rescale=False)
    torch.testing.assert_close(_flat(net.parameters()) - theta, d, rtol=1e-8, atol=1e-11)
    assert off.scale == 1.0 and off.full_products == 0
    # rho against the block-diagonal model the step minimises (undamped, as Martens')
    f1 = _loss(net, x, y)
    predicted = float(g @ d + 0.5 * d @ bd @ d)
    assert off.rho == [pytest.approx((f1 - f0) / predicted, rel=1e-8)]

    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(theta.clone(), net.parameters())
    on = _one_step(net, x, y, lam, scheme, rescale=True)
    alpha = min(1.0, float(-(g @ d) / (d @ big @ d)))
    assert alpha < 0.95  # the blocks' solutions overshoot together: the rescale bites
    assert on.scale == pytest.approx(alpha, rel=1e-9) and on.full_products == 1
    torch.testing.assert_close(_flat(net.parameters()) - theta, alpha * d, rtol=1e-8, atol=1e-11)
    f2 = _loss(net, x, y)
    predicted = float(alpha * (g @ d) + 0.5 * alpha**2 * (d @ big @ d))
    assert on.rho == [pytest.approx((f2 - f0) / predicted, rel=1e-8)]


@pytest.mark.parametrize("scheme", ["module", "pairs", "tensor"])
def test_block_coefficients_minimise_the_damped_full_ggn_model_over_the_block_directions(
    float64, scheme
):
    """combine="coefficients": the step is ``D a`` with ``D`` the block solutions as columns
    and ``a = -(D'(G + k lam I)D)^-1 D'g`` from the dense GGN, ``k`` = ``combine_damping``;
    rho against the undamped model along it; one full product per block."""
    net, x, y = _net_and_data()
    lam = 0.03
    theta = _flat(net.parameters())
    big, g = _dense(net, x, y)
    sizes = [sum(p.numel() for p in b.params) for b in partition(net, scheme)]
    d = torch.linalg.solve(_block_diagonal(big, sizes) + lam * torch.eye(len(g)), -g)
    columns, lo = torch.zeros(len(g), len(sizes), dtype=g.dtype), 0
    for b, n in enumerate(sizes):
        columns[lo : lo + n, b] = d[lo : lo + n]
        lo += n
    k = 2.5
    system = columns.T @ (big + k * lam * torch.eye(len(g))) @ columns
    a = torch.linalg.solve(system, -(columns.T @ g))
    step = columns @ a
    f0 = _loss(net, x, y)

    last = _one_step(
        net, x, y, lam, scheme, rescale=True, combine="coefficients", combine_damping=k
    )
    torch.testing.assert_close(_flat(net.parameters()) - theta, step, rtol=1e-7, atol=1e-10)
    assert last.block_coefficients == [pytest.approx(v, rel=1e-7) for v in a.tolist()]
    assert max(abs(v - 1) for v in a.tolist()) > 0.05  # the blocks couple: the factors bite
    assert last.full_products == len(sizes) and last.scale == 1.0
    f1 = _loss(net, x, y)
    predicted = float(g @ step + 0.5 * step @ big @ step)
    assert last.rho == [pytest.approx((f1 - f0) / predicted, rel=1e-7)]
    # the damped model is lower there than anywhere along the summed step
    damped = big + k * lam * torch.eye(len(g))
    best_along = float(-((g @ d) ** 2) / (2 * d @ damped @ d))
    assert float(g @ step + 0.5 * step @ damped @ step) < best_along


def test_with_one_block_or_per_block_damping_the_coefficients_are_the_scale(float64):
    """HF (one block) and per-block damping keep the single factor along the step."""
    for scheme, mode in (("all", "global"), ("halves", "per_block")):
        net, x, y = _net_and_data()
        scaled = _one_step(net, x, y, 0.03, scheme, rescale=True, damping_mode=mode)
        net, x, y = _net_and_data()
        both = _one_step(net, x, y, 0.03, scheme, True, damping_mode=mode, combine="coefficients")
        assert both.block_coefficients == [] and both.scale == scaled.scale
        assert both.full_products == scaled.full_products == 1


def test_rescale_off_per_block_damping_uses_each_blocks_own_model(float64):
    net, x, y = _net_and_data()
    theta = _flat(net.parameters())
    big, g = _dense(net, x, y)
    blocks = partition(net, "halves")
    sizes = [sum(p.numel() for p in b.params) for b in blocks]
    lam = 0.2
    d = torch.linalg.solve(_block_diagonal(big, sizes) + lam * torch.eye(len(g)), -g)
    f0 = _loss(net, x, y)
    last = _one_step(net, x, y, lam, "halves", rescale=False, damping_mode="per_block")
    rho, lo = [], 0
    for n in sizes:
        only = torch.zeros_like(d)
        only[lo : lo + n] = d[lo : lo + n]
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(theta + only, net.parameters())
        f = _loss(net, x, y)
        part = slice(lo, lo + n)
        predicted = float(g[part] @ d[part] + 0.5 * d[part] @ big[part, part] @ d[part])
        rho.append((f - f0) / predicted)
        lo += n
    assert last.rho == [pytest.approx(r, rel=1e-8) for r in rho]
    assert last.full_products == 0 and last.scale == 1.0


# -- through the registry and a grid -------------------------------------------------------------


def test_registry_options_and_defaults(autoencoder):
    bdhf = get_optimizer("bdhf")
    hp = bdhf.resolve({"blocks": "pairs", "rescale": "false"})
    assert hp["blocks"] == "pairs" and hp["rescale"] is False
    assert bdhf.resolve()["rescale"] is True and bdhf.resolve()["blocks"] == "module"
    assert get_optimizer("hf").resolve()["rescale"] is True
    assert bdhf.resolve({"blocks": "enc = 1.*,3.*,5.*,7.* ; dec=8.*,1?.*"})["blocks"] == (
        "enc=1.*,3.*,5.*,7.*;dec=8.*,1?.*"
    )
    opt = bdhf.build(autoencoder, bdhf.resolve({"blocks": "halves", "rescale": False}))
    assert [len(b) for b in opt.blocks()] == [8, 8] and opt.hp["rescale"] is False
    with pytest.raises(ValueError, match=r"hyperparameter blocks='layer' is not valid: unknown"):
        bdhf.resolve({"blocks": "layer"})
    with pytest.raises(ValueError, match=r"rescale='maybe' is not valid: must be true or false"):
        bdhf.resolve({"rescale": "maybe"})


def test_a_toml_grid_over_the_design_space(tmp_path):
    bdhf = get_optimizer("bdhf")
    path = tmp_path / "grid.toml"
    path.write_text(
        'optimizer = "bdhf"\n[grid]\nblocks = ["pairs", "enc=1.*;dec=3.*"]\n'
        "rescale = [true, false]\n"
        "[fixed]\ndamping = 10.0\n"
    )
    grid, fixed, points = load_grid_file(path, bdhf)
    assert points == []
    settings = grid_settings(bdhf, grid, fixed, points)
    assert [(s["blocks"], s["rescale"]) for s in settings] == [
        ("pairs", True),
        ("pairs", False),
        ("enc=1.*;dec=3.*", True),
        ("enc=1.*;dec=3.*", False),
    ]
    assert all(s["damping"] == 10.0 for s in settings)
    path.write_text('[grid]\nblocks = ["pairs", "enc=1.*;;dec=3.*"]\n')
    with pytest.raises(GridFileError, match=r"blocks='enc=1.\*;;dec=3.\*' is not valid: .*empty"):
        load_grid_file(path, bdhf)


def test_a_grid_file_can_list_its_settings_one_by_one(tmp_path):
    bdhf = get_optimizer("bdhf")
    path = tmp_path / "design.toml"
    path.write_text(
        '[fixed]\ndamping = 10.0\n[[point]]\nblocks = "module"\n'
        '[[point]]\nblocks = "halves"\nrescale = false\n'
        '[[point]]\ndamping_mode = "per_block"\ncurvature_fraction = 1.0\n'
    )
    grid, fixed, points = load_grid_file(path, bdhf)
    settings = grid_settings(bdhf, grid, fixed, points)
    default = bdhf.resolve({"damping": 10.0})
    assert settings == [
        default,
        {**default, "blocks": "halves", "rescale": False},
        {**default, "damping_mode": "per_block", "curvature_fraction": 1.0},
    ]
    # a grid and points together: the product first, then the points
    path.write_text('[grid]\ndamping = [3.0, 10.0]\n[[point]]\nblocks = "pairs"\n')
    grid, fixed, points = load_grid_file(path, bdhf)
    got = grid_settings(bdhf, grid, fixed, points)
    fallback = bdhf.resolve({})["damping"]  # a point without damping takes the default
    assert [(s["damping"], s["blocks"]) for s in got] == [
        (3.0, "module"),
        (10.0, "module"),
        (fallback, "pairs"),
    ]
    path.write_text(f'[grid]\ndamping = [{fallback}, 10.0]\n[[point]]\nblocks = "module"\n')
    with pytest.raises(ValueError, match="the setting blocks=module is listed twice"):
        grid_settings(bdhf, *load_grid_file(path, bdhf))
    path.write_text("[fixed]\ndamping = 1.0\n[[point]]\ndamping = 10.0\n")
    with pytest.raises(GridFileError, match="damping is in both point 1 and \\[fixed\\]"):
        load_grid_file(path, bdhf)
    path.write_text("[[point]]\nblocks = 'layers'\n")
    with pytest.raises(GridFileError, match="blocks='layers' is not valid"):
        load_grid_file(path, bdhf)


def test_a_suite_tunes_over_listed_points(tmp_path):
    (tmp_path / "design.toml").write_text(
        '[[point]]\nblocks = "pairs"\n[[point]]\nblocks = "halves"\nrescale = false\n'
    )
    suite = tmp_path / "s.toml"
    suite.write_text(
        '[[experiment]]\nproblem = "tiny_mlp"\noptimizers = ["bdhf"]\nsteps = 5\n'
        'tune = { bdhf = "design.toml" }\nhyperparameters = { bdhf = { damping = 3.0 } }\n'
    )
    (plan,) = load_suite(str(suite)).tunings
    assert [(s["blocks"], s["rescale"], s["damping"]) for s in plan.settings] == [
        ("pairs", True, 3.0),
        ("halves", False, 3.0),
    ]


def _layers(n: int) -> nn.Module:
    return nn.Sequential(*[nn.Linear(2, 2) for _ in range(n)])


def test_a_block_mapping_takes_a_single_glob_as_a_string():
    net = _layers(2)
    blocks = partition(net, {"first": "0.*", "second": ["1.weight", "1.bias"]})
    assert [b.name for b in blocks] == ["first", "second"]
    assert [len(b.params) for b in blocks] == [2, 2]


def test_block_scheme_errors_say_what_is_wrong_in_one_line():
    """The messages a user sees for a bad --hp blocks=..., word for word."""
    few = "0.weight, 0.bias, 1.weight, 1.bias"
    with pytest.raises(ValueError) as info:
        partition(_layers(2), "a=0.*;b=9.*")
    assert (
        str(info.value)
        == f"glob '9.*' of block 'b' matches no trainable parameter (the names: {few})"
    )
    many = ", ".join(f"{i}.{k}" for i in range(4) for k in ("weight", "bias")) + ", ..."
    with pytest.raises(ValueError) as info:
        partition(_layers(5), "a=0.*;b=x*")
    assert (
        str(info.value)
        == f"glob 'x*' of block 'b' matches no trainable parameter (the names: {many})"
    )
    eight = ", ".join(f"{i}.{k}" for i in range(4) for k in ("weight", "bias"))
    with pytest.raises(ValueError) as info:  # exactly eight names: all shown, no "..."
        partition(_layers(4), "a=0.*;b=x*")
    assert (
        str(info.value)
        == f"glob 'x*' of block 'b' matches no trainable parameter (the names: {eight})"
    )
    with pytest.raises(ValueError) as info:
        check_scheme("layers")
    assert str(info.value) == (
        "unknown block scheme 'layers'; valid: module, tensor, all, pairs, halves or globs "
        "such as 'enc=0.*,2.*;dec=4.*'"
    )
    with pytest.raises(ValueError) as info:
        check_scheme("a=0.*;b=1/x")
    assert str(info.value) == (
        "glob '1/x' of block 'b' in scheme 'a=0.*;b=1/x' must be a non-empty pattern of "
        "letters, digits, . _ - and * ? [ ] !"
    )


def test_the_name_list_is_cut_after_eight_and_a_frozen_model_is_refused():
    nine = nn.Sequential(*[nn.Linear(2, 2) for _ in range(4)], nn.Linear(2, 2, bias=False))
    with pytest.raises(ValueError, match=r"\(the names: 0\.weight, .*, 3\.bias, \.\.\.\)$"):
        partition(nine, "a=0.*;b=x*")
    frozen = _layers(1).requires_grad_(False)
    with pytest.raises(ValueError) as info:
        partition(frozen)
    assert str(info.value) == "the model has no trainable parameters"
