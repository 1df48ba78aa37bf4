"""scripts.topology.free_port: one stack's listeners never get the same port, even when the kernel offers one twice."""

from __future__ import annotations

import socket

import pytest

from scripts import topology


def test_a_port_the_kernel_offers_twice_is_handed_out_once(monkeypatch: pytest.MonkeyPatch):
    offered = iter([41001, 41001, 41001, 41002])  # what the kernel's binds to port 0 returned, in order

    class Bound:
        def __enter__(self) -> Bound:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def bind(self, address: tuple[str, int]) -> None:
            assert address == ("127.0.0.1", 0)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", next(offered))

    monkeypatch.setattr(topology, "_PORTS_GIVEN", set())
    monkeypatch.setattr(topology.socket, "socket", Bound)
    assert [topology.free_port(), topology.free_port()] == [41001, 41002]


def test_real_ports_are_free_and_distinct():
    ports = [topology.free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    for port in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # nobody listens on it
