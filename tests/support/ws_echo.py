"""A WebSocket echo server for the proxy tests (Flower has no WebSocket endpoint to test with)."""

import socketserver

from celerykit.verify.websocket import OP_CLOSE, accept_key, encode_frame, read_frame


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if headers.get("upgrade", "").lower() != "websocket" or "sec-websocket-key" not in headers:
            self.request.sendall(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n")
            return
        self.request.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept_key(headers['sec-websocket-key'])}\r\n\r\n".encode()
        )
        while True:
            opcode, payload = read_frame(self.request)
            self.request.sendall(encode_frame(payload, opcode, mask=False))
            if opcode == OP_CLOSE:
                return


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    with Server(("0.0.0.0", 8765), EchoHandler) as server:  # noqa: S104 - inside its container
        server.serve_forever()
