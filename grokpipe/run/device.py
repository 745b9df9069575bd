"""Which device a run trains on, and how much memory it has."""

from __future__ import annotations

import ctypes
import os

import torch

from grokpipe.core.errors import ConfigError


def pick_device(name: str) -> torch.device:
    """`auto` = cuda > mps > cpu; a named device that is not there is refused."""
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    }
    if name != "auto":
        if not available[name]:
            raise ConfigError(f"train.device={name!r} is not allowed: not available on this machine; use auto or cpu")
        return torch.device(name)
    for kind in ("cuda", "mps"):
        if available[kind]:
            return torch.device(kind)
    return torch.device("cpu")


def available_bytes(device: torch.device) -> int:
    """Memory a run can use on `device`: free GPU memory, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
        return info.get("MemAvailable", info["MemTotal"])
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
KEEP_FREE_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory of freed tensors for the next ones instead of giving it back to the
    kernel. By default a block over 128 KiB (an activation of any but the smallest models) is mapped on allocation
    and unmapped on free, so every step faults its activations' pages in afresh: up to a quarter of a CPU step
    (docs/benchmarks.md). Here every block comes from the heap, and the heap's free top is kept up to 1 GiB. No
    value changes; a process's memory stays at its peak. Returns whether it applied (glibc only: elsewhere the
    allocator is left as it is)."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc, not musl or macOS's libc
    except (OSError, AttributeError, TypeError):  # TypeError: no process-wide handle (Windows)
        return False
    return bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREE_BYTES)) and bool(libc.mallopt(M_MMAP_MAX, 0))
