"""The process-level settings a run makes on its machine (grokpipe.run.device)."""

from __future__ import annotations

import ctypes
import platform

import pytest
import torch

from grokpipe.run.device import KEEP_FREE_BYTES, keep_freed_memory

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


@glibc
def test_a_run_applies_the_setting(tmp_path):
    """train() itself keeps freed memory in the heap: in a fresh process (the setting is process-wide), a 64 MiB
    tensor allocated after a two-epoch run comes from the heap; in a process that only imported grokpipe, mapped."""
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parents[1]
    code = f"""
import ctypes, sys
sys.path.insert(0, {str(tests)!r}); sys.path.insert(0, {str(tests / "unit")!r})
import torch
from test_device import mallinfo
from helpers import compose_cfg
import grokpipe.run.train
if sys.argv[1] == "run":
    cfg = compose_cfg(["task.p=11", "model.d_model=8", "train.max_epochs=2", "logger=none", "train.plot=false"])
    grokpipe.run.train.run(cfg, {str(tmp_path / "run")!r})
mapped = mallinfo().hblkhd
x = torch.empty(64 << 20, dtype=torch.uint8); x.fill_(1)
print("heap" if mallinfo().hblkhd == mapped else "mapped")
"""
    out = {m: subprocess.run([sys.executable, "-c", code, m], capture_output=True, text=True, timeout=300) for m in
           ("run", "import")}  # fmt: skip
    assert out["run"].stdout.split()[-1:] == ["heap"], out["run"].stderr[-2000:]
    assert out["import"].stdout.split()[-1:] == ["mapped"], out["import"].stderr[-2000:]
