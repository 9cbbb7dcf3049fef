"""No network but loopback: the rule shared by the tests' `no_network` fixture and every
`livedesk` process a test spawns (through `sitecustomize` beside this file)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any


def is_loopback(address: Any) -> bool:
    """Whether a socket address stays on this machine (127.0.0.0/8, ::1, localhost, unix)."""
    if not (isinstance(address, tuple) and address):
        return True  # unix sockets and the like
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def name_allowed(host: Any) -> bool:
    """Whether resolving `host` is allowed: localhost, no name, or a loopback address."""
    name = host.decode() if isinstance(host, bytes) else host
    return name in (None, "localhost") or is_loopback((name, 0))


def install() -> None:
    """Patch this process's sockets: connecting anywhere else fails before a packet is sent."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address):
            raise ConnectionRefusedError(f"network access to {address!r} is blocked in tests")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address):
            raise ConnectionRefusedError(f"network access to {address!r} is blocked in tests")
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not name_allowed(host):
            raise socket.gaierror(f"name resolution of {host!r} is blocked in tests")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = getaddrinfo
