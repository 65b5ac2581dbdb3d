"""First start: make sure every secret the stack needs exists, generating the missing ones.

A secret file the user put in place is kept as it is, provided it passes the kit's rules (an
empty or weak one stops the start with a message naming the file). Generated files are readable
by the services' group only.

With Redis over TLS (CELERYKIT_REDIS_TLS), also Redis's certificate: signed by a CA of the stack's own
(celerykit.pki) unless the user put one in place, and issued again when it no longer covers Redis's
name or is near its end. The CA's and Redis's keys are readable by root only (Redis's entrypoint hands
its key to the redis user); the certificates by all.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from celerykit import pki
from celerykit.rules import Checker


@dataclass(frozen=True)
class Secret:
    filename: str
    description: str
    is_password: bool = True


SECRETS = (
    Secret("redis_password", "password of the Redis ACL user the Celery services log in as"),
    Secret("flower_password", "password for Flower's basic auth"),
    Secret("flower_cookie_secret", "key that signs Flower's cookies", is_password=False),
)


def ensure_secrets(directory: Path, group: int | None = None) -> list[Path]:
    """Create missing secrets in `directory`; return the files generated now. Every problem with
    the files given is reported at once, and then nothing is generated."""
    check = Checker()
    directory.mkdir(parents=True, exist_ok=True)
    for secret in SECRETS:
        path = directory / secret.filename
        if not path.exists():
            continue
        name = f"secret file {path} ({secret.description})"
        if secret.is_password:
            check.password(name, path.read_text())
        else:
            check.cookie_secret(name, path.read_text())
    check.raise_if_any()
    generated = []
    for secret in SECRETS:
        path = directory / secret.filename
        if path.exists():
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o440)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        generated.append(path)
    if group is not None:
        for secret in SECRETS:
            os.chown(directory / secret.filename, -1, group)
            os.chmod(directory / secret.filename, 0o440)
    return generated


# Redis's TLS files in the secrets directory: the CA clients trust, and Redis's certificate and key.
REDIS_CA, REDIS_CA_KEY = "redis-ca.crt", "redis-ca.key"
REDIS_CERT, REDIS_KEY = "redis-server.crt", "redis-server.key"


def ensure_redis_tls(directory: Path, names: list[str]) -> list[Path]:
    """Redis's certificate for `names` (what clients connect to), from the stack's own CA: made on the
    first start, issued again when it no longer fits. Files the user placed (a certificate, its key and
    their CA, without the CA's key) are kept as they are. Returns the files written now."""
    ca, ca_key = directory / REDIS_CA, directory / REDIS_CA_KEY
    cert, key = directory / REDIS_CERT, directory / REDIS_KEY
    if ca.exists() and not ca_key.exists():  # the user's own PKI
        check = Checker()
        for path in (cert, key):
            if not path.exists():
                check.refuse(f"secret file {path}", f"must exist beside {ca.name} (Redis's certificate and key)")
        check.raise_if_any()
        return []
    files = pki.Files(ca, ca_key, cert, key, public=0o444, private=0o400)
    return pki.ensure(files, names, ca_name="celerykit stack CA for Redis")
