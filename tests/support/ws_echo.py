"""A WebSocket echo server for the proxy tests (Flower has no WebSocket endpoint to test with),
on the `websockets` library. `--check` is the container's health check: one round trip."""

from __future__ import annotations

import sys

from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

PORT = 8765


def echo(connection: ServerConnection) -> None:
    """Send every message back as it came (text as text, bytes as bytes) until the client closes."""
    for message in connection:
        connection.send(message)


def check(port: int = PORT) -> bool:
    """One round trip to the local server."""
    with connect(f"ws://127.0.0.1:{port}/", proxy=None, open_timeout=8) as connection:
        connection.send("ping")
        return connection.recv(timeout=8) == "ping"


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if check() else 1)
    else:
        with serve(echo, "0.0.0.0", PORT) as server:  # noqa: S104 - inside its container
            server.serve_forever()
