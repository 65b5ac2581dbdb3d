"""First start: missing secrets generated, user-provided ones kept, empty or weak ones refused."""

import pytest

from celerykit.secrets import ensure_secrets
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


@pytest.mark.parametrize(
    ("value", "message"), [("", "is empty"), ("changeme", "shorter"), ("Administrator", "well-known")]
)
def test_bad_provided_password_is_refused(tmp_path, value, message):
    (tmp_path / "redis_password").write_text(value)
    with pytest.raises(ConfigError, match=message):
        ensure_secrets(tmp_path)
