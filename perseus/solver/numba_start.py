"""Loading numba's CPU target for the solver kernels without the BLAS bindings they never use.

numba builds its CPU target (the typing and lowering tables every compiled function is loaded
into) on the first call of any compiled function, cached or not. Part of that is
``numba.np.arraymath``, which at import probes for BLAS by importing ``scipy.linalg.cython_blas``
and so all of ``scipy.linalg``: about 0.25-0.35 s of CPU, a third of numba's start-up and a
fifth of ``perseus optimize`` on a small pipeline. The probe only decides whether
``np.convolve``/``np.correlate`` in compiled code use BLAS for their inner products (else a
plain loop, same results); ``np.dot`` and ``np.linalg`` import scipy's BLAS themselves when a
function using them is compiled. The kernels use none of them.

:func:`load_target` builds the target with ``scipy.linalg.cython_blas`` hidden: an entry of
``None`` in ``sys.modules`` makes that one import raise ImportError, the documented way to
block an import (Python's reference, "The module cache"); numba's probe catches it. The entry
is removed at once, so any later ``import scipy.linalg`` works as usual.
"""

from __future__ import annotations

import sys

from numba import njit

BLAS_MODULE = "scipy.linalg.cython_blas"
"""What numba.np.arraymath imports at import time to probe for BLAS."""
PROBING_MODULE = "numba.np.arraymath"


@njit(cache=True, nogil=True)
def _one(x: int) -> int:  # pragma: no cover - compiled
    """The smallest compiled function: calling it builds numba's CPU target."""
    return x + 1


def load_target() -> None:
    """Build numba's CPU target, if not built yet, without importing scipy's BLAS.

    Once per process; a no-op when numba's BLAS probe already ran or scipy's BLAS is loaded
    anyway (nothing to save then). Call it before the first kernel, from the thread that solves:
    while the target is built (0.2 s), another thread's first ``import scipy.linalg`` would fail.
    """
    if PROBING_MODULE in sys.modules or BLAS_MODULE in sys.modules:
        _one(1)
        return
    sys.modules[BLAS_MODULE] = None  # type: ignore[assignment]  # import raises ImportError (module cache)
    try:
        _one(1)
    finally:
        if BLAS_MODULE in sys.modules and sys.modules[BLAS_MODULE] is None:
            del sys.modules[BLAS_MODULE]
