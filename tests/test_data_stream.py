"""Batching and augmentation: device-side, deterministic per (seed, epoch, index), resumable, and
the same transforms as DeepOBS's torchvision pipeline."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from bdhf_bench.data import BatchStream, eval_batches, get_spec, load_splits, train_stream
from bdhf_bench.data.augment import JITTER_OPS, Augmentation, apply, draw
from bdhf_bench.data.seeding import generator, stream_seed


@pytest.fixture(scope="module")
def cifar():
    return load_splits("cifar10", source="synthetic", seed=0, synthetic_sizes=(400, 50))


def _ids(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(n, dtype=torch.float32).view(n, 1), torch.arange(n)


def test_epoch_is_a_shuffled_drop_last_pass() -> None:
    x, y = _ids(103)
    stream = BatchStream(x, y, 10, seed=1)
    assert stream.batches_per_epoch == 10
    batches = list(stream.epoch(0))
    assert len(batches) == 10 and all(len(b[1]) == 10 for b in batches)
    seen = torch.cat([b[1] for b in batches])
    assert len(set(seen.tolist())) == 100  # no repeats, 3 dropped
    assert all(torch.equal(bx[:, 0].long(), by) for bx, by in batches)  # pairs stay together
    assert not torch.equal(seen, torch.arange(103)[:100])  # shuffled


def test_order_is_a_pure_function_of_seed_and_epoch() -> None:
    x, y = _ids(64)

    def order(seed: int, epoch: int) -> torch.Tensor:
        return torch.cat([b[1] for b in BatchStream(x, y, 8, seed=seed).epoch(epoch)])

    assert torch.equal(order(1, 0), order(1, 0))
    assert not torch.equal(order(1, 0), order(1, 1))
    assert not torch.equal(order(1, 0), order(2, 0))
    assert (
        stream_seed(1, "shuffle", 0) == stream_seed(1, "shuffle", 0) != stream_seed(1, "shuffle", 1)
    )


def test_resuming_at_a_batch_index_reproduces_the_rest_exactly(cifar) -> None:
    stream = train_stream(cifar, 64, seed=5)
    full = list(stream.epoch(3))
    resumed = list(stream.epoch(3, start=2))
    assert len(resumed) == len(full) - 2
    for (a, la), (b, lb) in zip(full[2:], resumed):
        assert torch.equal(a, b) and torch.equal(la, lb)
    # a fresh stream object (a new process, say) gives the same batches
    again = list(train_stream(cifar, 64, seed=5).epoch(3, start=2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(resumed, again))


def test_augmentation_is_deterministic_per_seed_and_differs_across_seeds(cifar) -> None:
    first = next(train_stream(cifar, 64, seed=1).epoch(0))[0]
    same = next(train_stream(cifar, 64, seed=1).epoch(0))[0]
    other = next(train_stream(cifar, 64, seed=2).epoch(0))[0]
    plain = next(train_stream(cifar, 64, seed=1, augment=False).epoch(0))[0]
    assert torch.equal(first, same)
    assert not torch.equal(first, other)
    assert not torch.equal(first, plain)  # the images were changed
    assert first.shape == plain.shape


def _torchvision_reference(pixels: torch.Tensor, params, i: int) -> torch.Tensor:
    """Image i through torchvision's functions, DeepOBS's order: pad, crop, flip, jitter."""
    img = TF.pad(pixels[i], [2])
    img = TF.crop(img, int(params.dy[i]), int(params.dx[i]), 32, 32)
    if bool(params.flip[i]):
        img = TF.horizontal_flip(img)
    adjust = {
        "brightness": TF.adjust_brightness,
        "contrast": TF.adjust_contrast,
        "saturation": TF.adjust_saturation,
    }
    for op in params.order[i].tolist():
        img = adjust[JITTER_OPS[op]](img, float(params.factors[i, op]))
    return img


def test_batched_augmentation_equals_torchvision_per_image() -> None:
    pixels = torch.rand(48, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    params = draw(48, generator("cpu", 9), torch.device("cpu"), flip=True)
    ours = apply(pixels, params)
    reference = torch.stack([_torchvision_reference(pixels, params, i) for i in range(48)])
    torch.testing.assert_close(ours, reference, atol=2e-6, rtol=0)
    # every choice occurs: offsets 0..4, both flips, all six jitter orders
    assert set(params.dy.tolist()) == set(range(5)) and set(params.flip.tolist()) == {0, 1}
    assert len({tuple(o) for o in params.order.tolist()}) == 6


def test_jitter_factors_and_offsets_follow_deepobs_ranges() -> None:
    params = draw(4000, generator("cpu", 3), torch.device("cpu"), flip=True)
    b, c, s = params.factors.T
    assert float(b.min()) >= 1 - 63 / 255 and float(b.max()) <= 1 + 63 / 255
    assert float(c.min()) >= 0.2 and float(c.max()) <= 1.8
    assert float(s.min()) >= 0.5 and float(s.max()) <= 1.5
    assert abs(float(params.flip.float().mean()) - 0.5) < 0.05
    assert set(params.dx.tolist()) == set(range(5))


def test_svhn_has_no_flip_and_mnist_no_augmentation() -> None:
    svhn = Augmentation(get_spec("svhn"), "cpu")
    assert not svhn.flip
    params = draw(200, generator("cpu", 1), torch.device("cpu"), flip=svhn.flip)
    assert not bool(params.flip.any())
    mnist = load_splits("mnist", source="synthetic", synthetic_sizes=(120, 20))
    stream = train_stream(mnist, 10, seed=0)
    assert stream.augment is None
    x, _ = next(stream.epoch(0))
    order = torch.randperm(len(mnist.train[0]), generator=generator("cpu", 0, "shuffle", 0))
    assert torch.equal(x, mnist.train[0][order[:10]])  # plain rows of the split


def test_identity_parameters_leave_images_unchanged() -> None:
    pixels = torch.rand(5, 3, 32, 32)
    params = draw(5, generator("cpu", 0), torch.device("cpu"), flip=False)
    params = type(params)(
        dy=torch.full((5,), 2),
        dx=torch.full((5,), 2),
        flip=params.flip,
        factors=torch.ones(5, 3),
        order=params.order,
    )
    torch.testing.assert_close(apply(pixels, params), pixels)


def test_eval_batches_cover_a_split_once_in_order() -> None:
    x, y = _ids(25)
    batches = list(eval_batches((x, y), 10))
    assert [len(b[1]) for b in batches] == [10, 10, 5]
    assert torch.equal(torch.cat([b[1] for b in batches]), y)


def test_stream_rejects_bad_batch_sizes_and_starts() -> None:
    x, y = _ids(10)
    with pytest.raises(ValueError, match=r"batch size must be in 1\.\.10"):
        BatchStream(x, y, 11, seed=0)
    with pytest.raises(ValueError, match=r"start must be in 0\.\.5"):
        next(BatchStream(x, y, 2, seed=0).epoch(0, start=6))
    with pytest.raises(ValueError, match="batch size must be positive"):
        next(eval_batches((x, y), 0))
