"""A deployment to check: where it answers, with which credentials, and plain HTTP requests to it."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Target:
    url: str  # https://host[:port] of the proxy
    user: str
    password: str = field(repr=False)  # never in a traceback or a log
    http_url: str | None = None  # http://host[:port] that must redirect to HTTPS
    flower_path: str = "/flower/"
    ca_file: str | None = None  # CA that signed the proxy's certificate
    insecure: bool = False  # skip certificate verification (self-signed, first start)
    timeout: float = 10.0

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "localhost"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 443

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def flower(self, path: str = "") -> str:
        return self.flower_path.rstrip("/") + "/" + path.lstrip("/")

    def request(
        self, method: str, path: str, *, auth: bool = True, body: Any = None, url: str | None = None
    ) -> Response:
        parts = urlsplit(url or self.url)
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port or 443, timeout=self.timeout, context=self.tls_context()
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=self.timeout)
        headers = {"Accept": "application/json"}
        if auth:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=payload, headers=headers)
            raw = conn.getresponse()
            return Response(raw.status, {k.lower(): v for k, v in raw.getheaders()}, raw.read())
        finally:
            conn.close()
