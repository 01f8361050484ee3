"""FLOPs of a piece of work, dense linear algebra included.

torch's ``FlopCounterMode`` counts matmuls, convolutions and attention. The curvature methods
spend much of their extra work elsewhere, in small dense factorisations: K-FAC inverts or
eigendecomposes its Kronecker factors, Shampoo takes matrix roots through an SVD, SOAP
refreshes eigenbases with ``eigh`` and QR. Left out, that work would make those methods look
as cheap as Adam. ``LINALG_FLOPS`` charges each such aten op its textbook operation count
(LAPACK's conventions; Golub and Van Loan, *Matrix Computations*, 4th ed., tables 5.5.1 and
8.6.1), times its batch size: what a CPU or GPU solver does, to the leading term. It also
counts the matrix products torch's table leaves out (in-place ``addmm_`` and ``baddbmm_``,
``addbmm``, matrix-vector products), which some optimizers use to accumulate statistics.
Elementwise work stays uncounted, as for every other pass here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch.utils.flop_counter import FlopCounterMode

Shape = Sequence[int]


def _batch(shape: Shape) -> int:
    return math.prod(shape[:-2])


def _square(shape: Shape) -> tuple[int, int]:
    """(batch size, n) of a batch of n x n matrices."""
    return _batch(shape), shape[-1]


def _empty(shape: Shape | None) -> bool:
    """Whether an output was not computed (an empty tensor in its place)."""
    return shape is not None and math.prod(shape) == 0


def eigh_flops(a: Shape, *_: object, out_shape: Sequence[Shape], **__: object) -> int:
    """Symmetric eigendecomposition: 9 n^3 with eigenvectors, 4/3 n^3 for values only (read
    off the outputs: the dispatcher does not always pass ``compute_v``)."""
    b, n = _square(a)
    return b * ((4 * n**3) // 3 if _empty(out_shape[1]) else 9 * n**3)


def cholesky_flops(a: Shape, *_: object, **__: object) -> int:
    """Cholesky factorisation: n^3 / 3."""
    b, n = _square(a)
    return b * (n**3 // 3)


def inverse_flops(a: Shape, *_: object, **__: object) -> int:
    """General inverse (LU, then the inverse from it): 2 n^3."""
    b, n = _square(a)
    return b * 2 * n**3


def cholesky_inverse_flops(a: Shape, *_: object, **__: object) -> int:
    """Inverse from a Cholesky factor: n^3."""
    b, n = _square(a)
    return b * n**3


def _columns(a: Shape, rhs: Shape) -> int:
    """Right-hand sides of a solve (a vector counts as one)."""
    return 1 if len(rhs) == len(a) - 1 else rhs[-1]


def solve_flops(a: Shape, rhs: Shape, *_: object, **__: object) -> int:
    """LU solve: 2/3 n^3 for the factorisation, 2 n^2 per right-hand side."""
    b, n = _square(a)
    return b * ((2 * n**3) // 3 + 2 * n**2 * _columns(a, rhs))


def triangular_solve_flops(a: Shape, rhs: Shape, *_: object, **__: object) -> int:
    """Triangular solve: n^2 per right-hand side."""
    b, n = _square(a)
    return b * n**2 * _columns(a, rhs)


def qr_flops(a: Shape, *_: object, out_shape: Sequence[Shape], **__: object) -> int:
    """Householder QR of m x n (m >= n): 2mn^2 - 2/3 n^3, twice that with Q formed."""
    m, n = max(a[-2], a[-1]), min(a[-2], a[-1])
    r = 2 * m * n**2 - (2 * n**3) // 3
    return _batch(a) * (r if _empty(out_shape[0]) else 2 * r)


def svd_flops(a: Shape, *_: object, out_shape: Sequence[Shape] | None = None, **__: object) -> int:
    """R-SVD of m x n (m >= n): 4m^2 n + 8mn^2 + 9n^3 with U and V, 4mn^2 - 4/3 n^3 without."""
    m, n = max(a[-2], a[-1]), min(a[-2], a[-1])
    values_only = out_shape is not None and _empty(out_shape[0])
    per = 4 * m * n**2 - 4 * n**3 // 3 if values_only else 4 * m**2 * n + 8 * m * n**2 + 9 * n**3
    return _batch(a) * per


def pinv_flops(a: Shape, *_: object, **__: object) -> int:
    """Pseudo-inverse: an SVD with U and V."""
    return svd_flops(a)


def addmm_flops(bias: Shape, a: Shape, b: Shape, *_: object, **__: object) -> int:
    """``bias + a @ b`` written in place (``addmm_``, which torch's table leaves out): 2mnk."""
    return 2 * a[-2] * a[-1] * b[-1]


def baddbmm_flops(bias: Shape, a: Shape, b: Shape, *_: object, **__: object) -> int:
    """Batched ``addmm`` in place (``baddbmm_``) or summed over the batch (``addbmm``)."""
    return 2 * a[0] * a[-2] * a[-1] * b[-1]


def mv_flops(a: Shape, x: Shape, *_: object, **__: object) -> int:
    """Matrix-vector product: 2mn."""
    return 2 * a[-2] * a[-1]


def addmv_flops(bias: Shape, a: Shape, x: Shape, *_: object, **__: object) -> int:
    """``bias + a @ x``: 2mn."""
    return mv_flops(a, x)


def eig_flops(a: Shape, *_: object, **__: object) -> int:
    """General eigendecomposition with eigenvectors (Hessenberg QR): 25 n^3."""
    b, n = _square(a)
    return b * 25 * n**3


def _linalg_mapping() -> dict[object, Callable[..., int]]:
    import torch

    aten = torch.ops.aten
    return {
        aten._linalg_eigh: eigh_flops,
        aten.linalg_cholesky_ex: cholesky_flops,
        aten.linalg_inv_ex: inverse_flops,
        aten.cholesky_inverse: cholesky_inverse_flops,
        aten._linalg_solve_ex: solve_flops,
        aten.linalg_solve_triangular: triangular_solve_flops,
        aten.linalg_qr: qr_flops,
        aten._linalg_svd: svd_flops,
        aten.linalg_pinv: pinv_flops,
        aten.linalg_eig: eig_flops,
        aten.addmm_: addmm_flops,
        aten.baddbmm_: baddbmm_flops,
        aten.addbmm: baddbmm_flops,
        aten.addbmm_: baddbmm_flops,
        aten.mv: mv_flops,
        aten.addmv: addmv_flops,
        aten.addmv_: addmv_flops,
    }


def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs that ``fn()`` runs: matmuls and convolutions (torch's count) plus the dense
    factorisations and matrix products of ``_linalg_mapping``."""
    with FlopCounterMode(display=False, custom_mapping=_linalg_mapping()) as counter:
        fn()
    return float(counter.get_total_flops())
