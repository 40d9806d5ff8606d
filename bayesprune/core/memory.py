"""Will this run fit in memory?  Checked before the first epoch, so a huge width fails with a message.

Without it, ``--fcn-hidden 100000 100000`` (10^10 weights) either dies in the allocator's
error or, on Linux, gets the process killed by the out-of-memory killer part-way through
(no message, and a sweep loses the worker).  The estimate counts the network's parameters on
torch's ``meta`` device (no memory used) and multiplies by the float32 copies a run holds at
once: weights, gradients, Adam's two moments, the last finished epoch's copy, the gate's
snapshot of weights and optimizer, and the masks: :data:`COPIES` in all.  Activations and the
data set are left out (the data is already loaded; a batch is small next to weights this big),
so the estimate is a lower bound of what the run needs: it refuses only what cannot fit.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import torch

from .config import RunConfig

#: float32 copies of the parameters a run holds at once (see the module doc).
COPIES = 8
BYTES_PER_COPY = 4


class InsufficientMemoryError(ValueError):
    """The run's estimated memory exceeds what the device has free; the message names the width field."""


def parameter_count(cfg: RunConfig, input_shape: Sequence[int], num_classes: int) -> int:
    """The network's parameter count, built on the meta device (shapes only, no memory)."""
    from .models import build_model

    with torch.device("meta"):
        model = build_model(cfg, input_shape, num_classes)
    return sum(p.numel() for p in model.parameters())


def estimated_bytes(cfg: RunConfig, input_shape: Sequence[int], num_classes: int) -> int:
    return parameter_count(cfg, input_shape, num_classes) * COPIES * BYTES_PER_COPY


def _cgroup_free() -> Optional[int]:
    """What a container's memory limit leaves (cgroup v2), or None where there is no limit."""
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        used = int(open("/sys/fs/cgroup/memory.current").read())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def available_bytes(device: torch.device | str) -> Optional[int]:
    """Free memory on ``device`` (None where it cannot be read: then nothing is refused)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    free = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    if free is None and hasattr(os, "sysconf"):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            free = None
    group = _cgroup_free()
    return group if free is None else (free if group is None else min(free, group))


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def check_fits(cfg: RunConfig, input_shape: Sequence[int], num_classes: int, device: torch.device | str) -> None:
    """Raise :class:`InsufficientMemoryError` if the run cannot fit in ``device``'s free memory."""
    need = estimated_bytes(cfg, input_shape, num_classes)
    free = available_bytes(device)
    if free is None or need <= free:
        return
    field, value = ("fcn_hidden", cfg.fcn_hidden) if cfg.model == "fcn" else ("cnn_hidden", cfg.cnn_hidden)
    n = need // (COPIES * BYTES_PER_COPY)
    raise InsufficientMemoryError(
        f"RunConfig.{field}={value!r} is too large for this machine: the {cfg.model} has {n:.3g} parameters, and "
        f"training it needs at least {_gb(need)} ({COPIES} float32 copies: weights, gradients, Adam's moments, the "
        f"gate's snapshots), but {torch.device(device).type} has {_gb(free)} free. Use smaller widths.")
