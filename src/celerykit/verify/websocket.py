"""A WebSocket round trip through the proxy, with the `websockets` library (RFC 6455 done by a
maintained implementation, not by hand): open the connection (the 101 upgrade), send one text
message, read the echo, close."""

from __future__ import annotations

from dataclasses import dataclass

from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from celerykit.verify.target import Target

__all__ = ["EchoResult", "WebSocketException", "echo"]


@dataclass(frozen=True)
class EchoResult:
    status: str  # the upgrade's status line, e.g. "HTTP/1.1 101 Switching Protocols"
    reply: str | bytes  # the first message the server sent back


def echo(target: Target, path: str, message: str) -> EchoResult:
    """Open wss://host:port/path on the target (TLS verified with its CA file, or not when
    `insecure`), send `message`, return the upgrade's status line and the first message back.

    Raises `WebSocketException` (refused upgrade, closed connection) or `OSError` (TLS, network).
    """
    with connect(
        f"wss://{target.host}:{target.port}{path}",
        ssl=target.tls_context(),
        server_hostname=target.host,
        proxy=None,  # straight to the target, whatever the environment's proxy variables say
        compression=None,
        open_timeout=target.timeout,
        close_timeout=target.timeout,
    ) as connection:
        response = connection.response
        assert response is not None  # set once the opening handshake succeeded
        connection.send(message)
        reply = connection.recv(timeout=target.timeout)
    return EchoResult(f"HTTP/1.1 {response.status_code} {response.reason_phrase}", reply)
