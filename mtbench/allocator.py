"""Keep freed memory in the process (glibc malloc), so that training does not page-fault on every step.

With glibc's defaults, a buffer above the mmap threshold is mapped fresh at each allocation and unmapped at
each free, and the heap's top is trimmed back to the system; every new use of such memory then page-faults.
Back-propagating small convolutions allocates buffers of a few megabytes at every step, so the faults add up:
on the 2-core CPU this project is measured on, one grouped stride-2 convolution backward (the second layer
of ``conv4-maml``, 4 tasks of 25 images) took 10.1 ms with the defaults and 5.4 ms with the settings below,
and a 3-second loop of it caused about 600,000 minor page faults (benchmarks/maml_step.py reports the effect
on a whole meta-iteration). The settings raise the mmap threshold to glibc's largest (32 MB) and the trim
threshold to 1 GB, so freed buffers are reused. Arithmetic is unchanged (results are identical); the
resident memory stays nearer its peak instead of shrinking between steps.

``MTBENCH_MALLOC=system`` leaves the allocator as it is. Each cell records the mode it ran under
(``environment.worker.malloc``). Elsewhere than glibc (macOS, musl) nothing is changed.
"""
from __future__ import annotations

import ctypes
import os

from .errors import MtbenchError

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit glibc: the largest value accepted
TRIM_THRESHOLD = 2**30

_mode: str | None = None


def keep_freed_memory() -> str:
    """Apply the settings once per process (unless ``MTBENCH_MALLOC=system``); returns :func:`allocator_mode`."""
    global _mode
    if _mode is not None:
        return _mode
    choice = os.environ.get("MTBENCH_MALLOC", "keep").strip().lower()
    if choice not in ("keep", "system"):
        raise MtbenchError(f"MTBENCH_MALLOC must be 'keep' or 'system', not {choice!r}")
    if choice == "system":
        _mode = "system"
        return _mode
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        _mode = "system (no mallopt)"
        return _mode
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD):
        _mode = f"keep freed memory (mmap threshold {MMAP_THRESHOLD >> 20} MB, trim threshold {TRIM_THRESHOLD >> 20} MB)"
    else:
        _mode = "system (mallopt refused)"
    return _mode


def allocator_mode() -> str:
    """How this process's allocator was set: ``system`` until :func:`keep_freed_memory` has run."""
    return _mode or "system"
