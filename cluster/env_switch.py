"""A replica's on/off switches read from its environment (inline_body, proxy_receive): "1",
the default, or "0"; anything else is a clear error, not a silent default. Light at import:
Serve's proxy imports its users."""

from __future__ import annotations

import os


def is_on(name: str) -> bool:
    value = os.environ.get(name, "1")
    if value not in ("0", "1"):
        raise ValueError(f"{name} must be 0 or 1, not {value!r}")
    return value == "1"
