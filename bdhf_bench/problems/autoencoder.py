"""The deep autoencoder of Hinton & Salakhutdinov (2006), Martens' (2010) HF benchmark.

784-1000-500-250-30 encoder with sigmoid units and a linear 30-unit code, then the mirror decoder
30-250-500-1000-784 with sigmoid hidden units; the net returns the 784 output LOGITS and the loss
is sigmoid cross-entropy against the input pixels (``BCEWithLogits``), so the GGN has its
closed-form diagonal output Hessian.

Initialisation matters here (see design notes 2): from PyTorch's default the net falls onto the
mean-image plateau. Martens' sparse initialisation is the default: each unit gets exactly 15
nonzero incoming weights drawn from N(0, 1), all biases 0.

``DIGITS_ENCODER_SIZES`` is the same design scaled to scikit-learn's 8x8 digits: a first hidden
layer wider than the input, then halving widths down to a small linear code (64-128-64-32-8 and
the mirror decoder), with the same sigmoid units, loss and initialisation.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

ENCODER_SIZES = (784, 1000, 500, 250, 30)
DIGITS_ENCODER_SIZES = (64, 128, 64, 32, 8)
SPARSE_FAN_IN = 15
INITS = ("sparse", "pytorch")


def sparse_init_(layer: nn.Linear, nonzero: int = SPARSE_FAN_IN) -> None:
    """Martens (2010): ``nonzero`` incoming weights per unit from N(0, 1), the rest and the bias
    zero. Uses torch's global generator (the caller seeds it)."""
    out_features, in_features = layer.weight.shape
    k = min(nonzero, in_features)
    with torch.no_grad():
        chosen = torch.rand(out_features, in_features).argsort(dim=1)[:, :k]
        layer.weight.zero_().scatter_(1, chosen, torch.randn(out_features, k))
        if layer.bias is not None:
            layer.bias.zero_()


def deep_autoencoder(
    init: str = "sparse", encoder_sizes: tuple[int, ...] = ENCODER_SIZES
) -> nn.Sequential:
    """The autoencoder on flattened images (``encoder_sizes``: input, hidden widths, code; the
    default is the 28x28 one); ``init`` is "sparse" (Martens) or "pytorch"."""
    if init not in INITS:
        raise ValueError(f"unknown autoencoder init {init!r}; valid: {', '.join(INITS)}")
    sizes = encoder_sizes + encoder_sizes[-2::-1]
    layers: list[nn.Module] = [nn.Flatten()]
    code = len(encoder_sizes) - 2  # index of the layer that produces the code
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i != code and i != len(sizes) - 2:
            layers.append(nn.Sigmoid())
    net = nn.Sequential(*layers)
    if init == "sparse":
        for module in net.modules():
            if isinstance(module, nn.Linear):
                sparse_init_(module)
    return net
