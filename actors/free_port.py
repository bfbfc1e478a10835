"""A free TCP port for a server that binds it later, in another process (Serve's HTTP proxy,
a process group's rendezvous).

Binding port 0 and closing the socket gives a port of the kernel's ephemeral range, the range
every later bind to port 0 and every outgoing connection draws from: between the close and the
server's own bind, any of them may take it. On a node that starts Ray processes meanwhile,
that happens: in the fourteenth session's fresh-clone run, the Serve controller that
serve.start launched gave its own gRPC server the port just picked for the HTTP proxy, the
proxy failed to bind it for as long as the controller lived, and serve.start raised (Ray
2.60, where a worker's gRPC port is the kernel's pick). A port below the ephemeral range is
handed out to explicit binds only, so this draws one there at random (not from `random`'s
global state, which a test may seed: two sessions on one machine would then draw alike) and
checks that it binds now.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

# Ray's worker ports, where `ray start` fixes them (--min/max-worker-port), end at 19999.
LOWEST = 20000
# Elsewhere than Linux: the IANA dynamic range (macOS's default ephemeral range) starts here.
IANA_EPHEMERAL_START = 49152
LINUX_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
TRIES = 200

_draw = random.SystemRandom()


def ephemeral_start(range_file: Path = LINUX_RANGE) -> int:
    """The lowest port the kernel hands to a bind to port 0 or an outgoing connection."""
    try:
        return int(range_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return IANA_EPHEMERAL_START


def can_bind(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", range_file: Path = LINUX_RANGE) -> int:
    """A port free on host now and outside the kernel's ephemeral range."""
    top = ephemeral_start(range_file)
    if top - LOWEST < 1000:  # a kernel told to hand out nearly every port: take its pick
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            return s.getsockname()[1]
    for _ in range(TRIES):
        port = _draw.randrange(LOWEST, top)
        if can_bind(host, port):
            return port
    raise OSError(f"no free port in {LOWEST}-{top - 1} on {host} after {TRIES} draws")
