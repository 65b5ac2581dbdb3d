"""First start: make sure every secret the stack needs exists, generating the missing ones.

A secret file the user put in place is kept as it is, provided it passes the kit's rules (an
empty or weak one stops the start with a message naming the file). Generated files are readable
by the services' group only.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

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
