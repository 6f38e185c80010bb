"""numba for magcam's kernels, imported without numba's BLAS probe.

Usage::

    from magcam.jit import njit, prange          # instead of ``from numba import ...``
    from magcam.jit import numba                 # numba itself, e.g. numba.get_num_threads()

Why: the first time numba compiles or loads a kernel it imports ``numba.np.arraymath``, and
that module's import checks for a BLAS by importing ``scipy.linalg`` wherever SciPy is
installed (most scientific Python environments; magcam does not need it, so a clean install of
it has none). On the 2-core reference machine that is 0.1-0.3 s of a cold ``magcam process``
(tools/bench/stages.py shows it under ``kernel_load``). magcam's kernels call no BLAS, so this
module imports arraymath first, with the probe's import answered "not installed".

What else it changes, in this process only: numba's ``np.convolve`` / ``np.correlate`` in other
jitted code use numba's plain loop rather than BLAS ``dot``. ``np.dot`` and ``np.linalg`` still
work: they import scipy themselves when compiled. Nothing changes when scipy's BLAS module, or
numba's arraymath, was already imported (then there is nothing to save).
"""

from __future__ import annotations

import sys

import numba
from numba import get_thread_id, njit, prange, uintp

__all__ = ["get_thread_id", "njit", "numba", "prange", "uintp"]

_BLAS_PROBE = "scipy.linalg.cython_blas"  # what numba.np.linalg.ensure_blas imports
_ARRAYMATH = "numba.np.arraymath"


def _import_arraymath_without_blas_probe() -> None:
    if _ARRAYMATH in sys.modules or _BLAS_PROBE in sys.modules:
        return
    sys.modules[_BLAS_PROBE] = None  # an import of it raises ImportError before importing scipy
    try:
        __import__(_ARRAYMATH)
    finally:
        if sys.modules.get(_BLAS_PROBE, 0) is None:
            del sys.modules[_BLAS_PROBE]


_import_arraymath_without_blas_probe()
