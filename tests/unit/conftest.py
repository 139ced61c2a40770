"""Unit tests run without servers: any attempt to open a network connection fails the test."""

from __future__ import annotations

import socket
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    original = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family == socket.AF_UNIX:
            return original(self, address)
        raise AssertionError(f"unit tests must not touch the network (tried {address})")

    monkeypatch.setattr(socket.socket, "connect", guarded)
