"""First start: make sure every secret the stack needs exists, generating the missing ones.

A secret file the user put in place is kept as it is, provided it is usable; an empty or weak
one stops the start with a message naming the file. Generated files are readable by the
services' group only.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from celerykit.settings import ConfigError, check_password


@dataclass(frozen=True)
class Secret:
    filename: str
    description: str
    min_length: int = 12
    is_password: bool = True


SECRETS = (
    Secret("redis_password", "password of the Redis ACL user the Celery services log in as"),
    Secret("flower_password", "password for Flower's basic auth"),
    Secret("flower_cookie_secret", "key that signs Flower's cookies", min_length=32, is_password=False),
)


def ensure_secrets(directory: Path, group: int | None = None) -> list[Path]:
    """Create missing secrets in `directory`; return the files generated now."""
    generated = []
    directory.mkdir(parents=True, exist_ok=True)
    for secret in SECRETS:
        path = directory / secret.filename
        if path.exists():
            value = path.read_text().strip()
            if not value:
                raise ConfigError(
                    f"secret file {path} ({secret.description}) is empty: "
                    "put a value in it, or delete it to have one generated"
                )
            if secret.is_password:
                check_password(str(path), value)
            elif len(value) < secret.min_length:
                raise ConfigError(f"secret file {path} is shorter than {secret.min_length} characters")
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o440)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        generated.append(path)
    for secret in SECRETS:
        path = directory / secret.filename
        if group is not None:
            os.chown(path, -1, group)
            os.chmod(path, 0o440)
    return generated
