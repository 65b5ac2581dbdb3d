"""A WebSocket echo server for the proxy tests (Flower has no WebSocket endpoint to test with),
on the `websockets` library."""

from __future__ import annotations

from websockets.sync.server import ServerConnection, serve

PORT = 8765


def echo(connection: ServerConnection) -> None:
    """Send every message back as it came (text as text, bytes as bytes) until the client closes."""
    for message in connection:
        connection.send(message)


if __name__ == "__main__":
    with serve(echo, "0.0.0.0", PORT) as server:  # noqa: S104 - inside its container
        server.serve_forever()
