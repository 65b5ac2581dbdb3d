"""A mail and webhook sink for alert tests: what arrives is kept in memory and listed as JSON.

SMTP on 2525 (what Alertmanager's smarthost points at); HTTP on 8080: POST /hook takes a webhook
call, GET /mails and GET /hooks list what arrived, each with the time it arrived.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

MAILS: list[dict] = []
HOOKS: list[dict] = []
LOCK = threading.Lock()


class Mailbox:
    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = message.get_body(preferencelist=("plain", "html"))
        with LOCK:
            MAILS.append(
                {
                    "received_at": time.time(),
                    "from": envelope.mail_from,
                    "to": list(envelope.rcpt_tos),
                    "subject": str(message["subject"]),
                    "body": body.get_content() if body else "",
                }
            )
        return "250 OK"


class Web(BaseHTTPRequestHandler):
    def _answer(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        payload = json.loads(self.rfile.read(length) or b"null")
        with LOCK:
            HOOKS.append({"received_at": time.time(), "path": self.path, "payload": payload})
        self._answer(200, {"ok": True})

    def do_GET(self):
        with LOCK:
            listing = {"/mails": MAILS, "/hooks": HOOKS}.get(self.path)
            self._answer(404 if listing is None else 200, listing)

    def log_message(self, *_):
        pass


if __name__ == "__main__":
    Controller(Mailbox(), hostname="0.0.0.0", port=2525).start()  # noqa: S104 - inside its container
    ThreadingHTTPServer(("0.0.0.0", 8080), Web).serve_forever()  # noqa: S104
