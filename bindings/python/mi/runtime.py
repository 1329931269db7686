"""The loaded libmi and its BLIS: version, kernel set, threads."""

import ctypes

from ._native import lib
from .arrays import size


def version() -> str:
    """The loaded libmi's version string."""
    return lib.mi_version_string().decode()


def select_fast_kernels() -> None:
    """Opts this process in to the fastest BLIS kernel set its CPU runs
    (mi_blis_select_fast_kernels). Call it before any other libmi work:
    afterwards it raises MiError (wrong state)."""
    lib.mi_blis_select_fast_kernels()


def kernel_set() -> str:
    """The BLIS kernel set in use ("skx", "haswell", ...), starting BLIS."""
    out = ctypes.c_char_p()
    lib.mi_blis_kernel_set(ctypes.byref(out))
    return out.value.decode()


def set_num_threads(n: int) -> None:
    """Threads for each later libmi BLIS call (0: BLIS's own setting)."""
    lib.mi_set_num_threads(size(n, "threads"))


def get_num_threads() -> int:
    """The value last given to :func:`set_num_threads`."""
    return lib.mi_get_num_threads()
