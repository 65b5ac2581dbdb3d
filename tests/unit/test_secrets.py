"""First start: missing secrets generated, user-provided ones kept, empty or weak ones refused."""

import pytest

from celerykit.secrets import SECRETS, ensure_secrets
from celerykit.settings import ConfigError


def test_missing_secrets_are_generated_unique_and_private(tmp_path):
    generated = ensure_secrets(tmp_path)
    assert sorted(p.name for p in generated) == ["flower_cookie_secret", "flower_password", "redis_password"]
    values = {p.read_text() for p in generated}
    assert len(values) == 3
    assert all(oct(p.stat().st_mode & 0o777) == "0o440" for p in generated)
    assert ensure_secrets(tmp_path) == []  # second start: nothing new


def test_a_provided_password_is_kept(tmp_path):
    (tmp_path / "flower_password").write_text("a long and private phrase\n")
    ensure_secrets(tmp_path)
    assert (tmp_path / "flower_password").read_text() == "a long and private phrase\n"


# (secret file, content, the one line it is refused with): what `init` says of secrets a user put in place.
BAD_SECRETS = [
    ("flower_password", "", "({}) must not be empty"),
    ("redis_password", "   \n", "({}) must not be empty"),
    ("flower_password", "changeme", "({}) must be at least 12 characters long, got 8"),
    ("flower_password", "administrator", "({}) is a well-known default password: choose or generate another"),
    ("redis_password", "Password123", "({}) must be at least 12 characters long, got 11"),
    ("flower_cookie_secret", "too-short-for-a-key", "({}) must be at least 32 characters long, got 19"),
]


@pytest.mark.parametrize(("secret", "value", "rule"), BAD_SECRETS, ids=[f"{s}={v!r}" for s, v, _ in BAD_SECRETS])
def test_a_bad_provided_secret_is_refused_with_one_line_and_nothing_is_generated(tmp_path, secret, value, rule):
    (tmp_path / secret).write_text(value)
    with pytest.raises(ConfigError) as error:
        ensure_secrets(tmp_path)
    (described,) = [s.description for s in SECRETS if s.filename == secret]
    assert str(error.value) == f"secret file {tmp_path / secret} " + rule.format(described)
    assert [p.name for p in tmp_path.iterdir()] == [secret]


def test_every_bad_secret_is_listed_at_once(tmp_path):
    (tmp_path / "redis_password").write_text("changeme")
    (tmp_path / "flower_password").write_text("administrator")
    with pytest.raises(ConfigError) as error:
        ensure_secrets(tmp_path)
    assert len(str(error.value).splitlines()) == 2
