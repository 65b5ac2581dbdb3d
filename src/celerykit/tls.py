"""The self-signed certificate the proxy starts with when the user gives none: one recipe.

The compose nginx image makes it with `openssl` at first start (celerykit.proxy), the proxy role
with community.crypto's modules; both take the key type, validity and names from here.
"""

from __future__ import annotations

from collections.abc import Sequence

from celerykit.defaults import TLS_KEY_CURVE as KEY_CURVE
from celerykit.defaults import TLS_VALID_DAYS as VALID_DAYS

__all__ = ["KEY_CURVE", "OPENSSL_CURVE", "VALID_DAYS", "common_name", "self_signed_names"]

# The curve as `openssl` names it (the SEC name above is community.crypto's and cryptography's).
OPENSSL_CURVE = {"secp256r1": "prime256v1"}.get(KEY_CURVE, KEY_CURVE)


def self_signed_names(server_name: str, hostname: str = "localhost", addresses: Sequence[str] = ()) -> list[str]:
    """subjectAltName entries: the server name and host name, localhost, loopback and the host's addresses."""
    names = [f"DNS:{name}" for name in dict.fromkeys((server_name, hostname, "localhost")) if name not in ("", "_")]
    ips = dict.fromkeys(("127.0.0.1", "::1", *addresses))
    return names + [f"IP:{ip}" for ip in ips if ip]


def common_name(server_name: str, hostname: str = "localhost") -> str:
    return server_name if server_name not in ("", "_") else hostname
