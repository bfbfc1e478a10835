"""Where the references may decide on device values.

Reading a value back (bool(), .item(), .tolist(), nonzero) is free on the CPU, and the
references use it there to skip work no row needs. On a GPU the same read is a sync that
stalls the stream and breaks CUDA-graph capture, so off the CPU they take a path with no
host decision (and on the meta device, where the tests check that, a read raises).
"""

from __future__ import annotations

import torch


def can_read_back(x: torch.Tensor) -> bool:
    """Whether deciding on x's values on the host costs no device sync."""
    return x.device.type == "cpu"
