"""Which device a run trains on, and how much memory it has."""

from __future__ import annotations

import os

import torch

from grokpipe.errors import ConfigError


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
