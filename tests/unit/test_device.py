"""The process-level settings a run makes on its machine (grokpipe.device)."""

from __future__ import annotations

import ctypes
import platform

import pytest
import torch

from grokpipe.device import KEEP_FREE_BYTES, keep_freed_memory

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's malloc's")


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def mallinfo() -> MallInfo2:
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2()


@glibc
def test_freed_tensor_memory_stays_in_the_heap():
    assert keep_freed_memory()
    size = 64 << 20  # above glibc's largest automatic mmap threshold (32 MiB): mapped and unmapped by default
    mapped = mallinfo().hblkhd
    x = torch.empty(size, dtype=torch.uint8)
    x.fill_(1)
    assert mallinfo().hblkhd == mapped  # from the heap, not a fresh mapping
    del x
    after = mallinfo()
    assert size < KEEP_FREE_BYTES
    assert after.fordblks >= size and after.arena >= size  # freed into the heap and kept, not handed back
