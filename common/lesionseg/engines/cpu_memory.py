"""Training on the CPU: keep the memory that tensors free for reuse instead of handing it back to the system.

glibc's ``malloc`` serves every block above its ``mmap`` threshold (at most 32 MiB) with fresh pages from
``mmap`` and unmaps them again on ``free``. A training step at 224², batch 16, allocates and frees a few
gigabytes of such blocks (every full-resolution activation and its gradient), so the kernel zeroes the same
amount of new pages on first touch, step after step: 18 % to 38 % of the CPU time of the paper preset's
training steps (``benchmarks/cpu_memory.py``). :func:`reuse_freed_memory` sets glibc's ``mallopt(3)`` parameters
``M_MMAP_MAX = 0`` (no block is served by ``mmap``) and ``M_TRIM_THRESHOLD = -1`` (the heap is never trimmed),
the run-time form of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` in the environment. After the first few
steps every block comes from memory the process already holds. The numbers do not change (only addresses do);
at 224² on 2 CPU threads, training steps run 1.2× (DC-Net, TaiChiNet) to 1.6× (BasicUNet) faster, and the peak
resident memory is up to 40 % higher (the heap keeps the gaps between aligned blocks), held until
:func:`release_freed_memory` restores glibc's defaults. Before the process forks (DataLoader workers, every
epoch), the free memory is handed back (``malloc_trim``): a child shares the parent's pages copy-on-write, so
free pages kept through a fork would be copied by the parent's next step and held twice.

Only the CPU with glibc (Linux) is affected. On a CUDA device, or with another C library (macOS, Windows,
musl), nothing changes and the log says why. The setting belongs to the process, as the allocator does
(TaiChiNet's preparation, which its training runs in the same process, has it too); calls nest, and glibc's
defaults come back when the last caller releases it.

Example::

    >>> import torch
    >>> from lesionseg.engines.cpu_memory import reuse_freed_memory, release_freed_memory
    >>> if reuse_freed_memory(torch.device("cpu")):  # True on Linux with glibc
    ...     ...  # train
    ...     restored = release_freed_memory()  # glibc's defaults again, the heap's free memory returned

In a bundle, ``initialize`` keeps what :func:`reuse_freed_memory` returned (``cpu_memory_held``) and ``finalize``
passes it to ``release_freed_memory(held=...)``: a workflow releases only the hold it took.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading
from functools import lru_cache

import torch

__all__ = ["release_freed_memory", "reuse_freed_memory"]

logger = logging.getLogger(__name__)

# mallopt(3) parameter numbers, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
# no block served by mmap; -1 disables trimming (mallopt(3))
_REUSE = {_M_MMAP_MAX: 0, _M_TRIM_THRESHOLD: -1}
# glibc's start-up values, which release_freed_memory restores: 128 KiB thresholds, up to 65 536 mmap'ed blocks
_START_UP = {_M_MMAP_MAX: 65536, _M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_THRESHOLD: 128 * 1024}

_lock = threading.Lock()
_holders = 0
_fork_hook = False


@lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """This process's C library when it is glibc, else ``None``."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(None)
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    return libc


def _trim_before_fork() -> None:
    # A forked child (a DataLoader worker, forked again every epoch) shares the parent's pages copy-on-write, and
    # the parent's next step writes to every free heap page it reuses: each is copied, and the child keeps the
    # original. Kept free memory would be held twice; handed back first, it costs the parent fresh pages once.
    if _holders and (libc := _glibc()) is not None:
        libc.malloc_trim(0)


def _mallopt(libc: ctypes.CDLL, settings: dict[int, int]) -> None:
    for param, value in settings.items():
        if libc.mallopt(param, value) != 1:
            raise OSError(f"glibc mallopt({param}, {value}) failed")


def reuse_freed_memory(device: torch.device | str, enabled: bool = True) -> bool:
    """Make this process's ``malloc`` keep freed memory for reuse, for training on ``device``.

    Args:
        device: the device the workflow trains on; only ``cpu`` changes anything.
        enabled: the bundle setting (``cpu_reuse_freed_memory``); ``False`` leaves glibc's defaults and logs it.

    Returns:
        Whether the setting is now in force (``True`` also when an enclosing workflow already set it). Each
        ``True`` is to be matched by one :func:`release_freed_memory`.
    """
    global _holders, _fork_hook
    if torch.device(device).type != "cpu":
        return False
    if not enabled:
        logger.info("CPU memory: glibc's defaults (cpu_reuse_freed_memory is off): large blocks mmap'ed afresh")
        return False
    libc = _glibc()
    if libc is None:
        libc_name = platform.libc_ver()[0] or platform.system()
        logger.info("CPU memory: allocator left as it is (not glibc: %s)", libc_name)
        return False
    with _lock:
        if not _fork_hook:
            os.register_at_fork(before=_trim_before_fork)  # cannot be unregistered: it checks _holders
            _fork_hook = True
        if _holders == 0:
            _mallopt(libc, _REUSE)
            logger.info(
                "CPU memory: glibc keeps freed memory for reuse (no mmap'ed blocks, no trimming): faster training "
                "steps, higher peak resident memory; cpu_reuse_freed_memory=False keeps glibc's defaults"
            )
        _holders += 1
    return True


def release_freed_memory(held: bool = True) -> bool:
    """Undo one :func:`reuse_freed_memory` that returned ``True``; the last one restores glibc's defaults.

    glibc's start-up values come back (128 KiB thresholds; glibc no longer raises the ``mmap`` threshold by
    itself once a threshold has been set), and ``malloc_trim`` returns the free memory the heap holds.

    Args:
        held: what the matching :func:`reuse_freed_memory` returned. ``False`` (a GPU workflow, or one with the
            setting off) releases nothing, so that it cannot end the hold of an enclosing CPU workflow.

    Returns:
        Whether glibc's defaults were restored by this call.
    """
    global _holders
    if not held:
        return False
    libc = _glibc()
    with _lock:
        if libc is None or _holders == 0:
            return False
        _holders -= 1
        if _holders:
            return False
        _mallopt(libc, _START_UP)
        libc.malloc_trim(0)
    logger.info("CPU memory: glibc's defaults restored")
    return True
