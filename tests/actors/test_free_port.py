"""actors/free_port.py: a port no bind to port 0 and no outgoing connection can be handed
before the server that asked for it binds it."""

from __future__ import annotations

import socket
from pathlib import Path

from actors.free_port import IANA_EPHEMERAL_START, LOWEST, ephemeral_start, free_port


def test_the_port_is_free_and_below_the_kernels_ephemeral_range() -> None:
    top = ephemeral_start()
    ports = {free_port() for _ in range(20)}
    assert all(LOWEST <= p < top for p in ports), (sorted(ports), top)
    assert len(ports) > 1  # drawn, not a fixed port two sessions on one machine would share
    port = ports.pop()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_a_port_in_use_is_passed_over(monkeypatch) -> None:
    from actors import free_port as module

    with socket.socket() as taken:
        busy = free_port()
        taken.bind(("127.0.0.1", busy))  # a draw that lands on a listening port...
        taken.listen()
        spare = free_port()
        draws = iter([busy, spare])
        monkeypatch.setattr(module._draw, "randrange", lambda lo, hi: next(draws))
        assert free_port() == spare  # ...is drawn again


def test_the_range_is_read_from_the_kernel_or_defaults_to_ianas(tmp_path: Path) -> None:
    linux = tmp_path / "range"
    linux.write_text("40000\t60999\n")
    assert ephemeral_start(linux) == 40000
    assert LOWEST <= free_port(range_file=linux) < 40000
    assert ephemeral_start(tmp_path / "missing") == IANA_EPHEMERAL_START


def test_a_kernel_that_hands_out_nearly_every_port_gives_its_own_pick(tmp_path: Path) -> None:
    wide = tmp_path / "range"
    wide.write_text("1024\t65535\n")
    port = free_port(range_file=wide)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_a_shard_groups_rendezvous_port_is_one_of_these() -> None:
    """Rank 0's process-group store binds the port after a Ray round trip to every rank."""
    from actors.shard_worker import ShardWorker

    worker = ShardWorker("unused", rank=0, world_size=2, num_blocks=1, block_size=16)
    _, port = worker.rendezvous_address()
    assert LOWEST <= port < ephemeral_start()
