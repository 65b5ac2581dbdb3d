"""`celerykit admin`'s arguments: each bad one refused in one line naming it, before anything is
asked of Flower or Redis (the stack tests, tests/stack/test_admin.py, prove the commands)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from celerykit import admin
from celerykit.cli import main


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "flower_password"
    path.write_text("a-long-enough-password-1\n")
    return path


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (admin.URL_VARIABLE, admin.CA_VARIABLE, admin.PASSWORD_VARIABLE, "CELERYKIT_FLOWER_USER"):
        monkeypatch.delenv(name, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `celerykit admin ARGV`."""
    try:
        code = main(["admin", *argv])
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 2) -> str:
    got, out, err = run(capsys, *argv)
    assert (got, out) == (code, ""), err
    (line,) = err.splitlines()
    return line


def test_no_password_option_exists_and_a_mistyped_one_is_never_echoed(capsys, password_file):
    for argv in (["--password", "hunter2-secret"], ["--password=hunter2-secret"], ["--pass", "hunter2-secret"]):
        line = refused(capsys, "workers", "--password-file", str(password_file), *argv)
        assert "unrecognized option(s) --pass" in line and "hunter2" not in line


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--url", "http://127.0.0.1:8443"], "--url (CELERYKIT_ADMIN_URL) must be the proxy's https://HOST[:PORT]"),
        (["--url", "https://127.0.0.1:x"], "got 'https://127.0.0.1:x'"),
        (["--password-file", "/nonexistent/flower_password"], "must name a file this user may read"),
    ],
)
def test_bad_connection_settings_are_refused_in_one_line(capsys, password_file, argv, expected):
    line = refused(capsys, "queues", "--password-file", str(password_file), *argv)
    assert line.startswith("celerykit admin queues: ") and expected in line


def test_the_password_file_is_required_and_must_not_be_empty(capsys, tmp_path):
    line = refused(capsys, "queues")
    assert "--password-file (CELERYKIT_FLOWER_PASSWORD_FILE) must be given" in line
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert "must hold the password, got the empty file" in refused(capsys, "queues", "--password-file", str(empty))


def test_a_ca_file_that_holds_no_certificate_is_refused(capsys, password_file):
    line = refused(capsys, "workers", "--password-file", str(password_file), "--ca-file", str(password_file))
    assert "--ca-file (CELERYKIT_ADMIN_CA_FILE) must name a readable PEM certificate file" in line


def test_settings_come_from_the_environment_too(capsys, monkeypatch, password_file):
    monkeypatch.setenv(admin.URL_VARIABLE, "ftp://flower.example")
    monkeypatch.setenv(admin.PASSWORD_VARIABLE, str(password_file))
    assert "got 'ftp://flower.example'" in refused(capsys, "workers")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["revoke"], "give task ids, or --task NAME --state STATE (not both)"),
        (["revoke", "some-id", "--task", "t", "--state", "PENDING"], "(not both)"),
        (["revoke", "--task", "t"], "--task and --state go together"),
        (["revoke", "some-id", "--signal", "KILL"], "--signal SIGKILL needs --terminate"),
        (["revoke", "some-id", "--terminate", "--signal", "NOPE"], "must be a signal name such as SIGTERM"),
        (["revoke", "--task", "t", "--state", "SUCCESS"], "argument --state: invalid choice: 'SUCCESS'"),
        (["pool", "restart", "low@host", "2"], "pool restart takes no N, got 2"),
        (["pool", "grow", "low@host", "0"], "must be a whole number of processes, at least 1, got '0'"),
        (["pool", "resize", "low@host"], "argument action: invalid choice: 'resize'"),
        (["consumer", "add", "low@host"], "the following arguments are required: QUEUE"),
    ],
)
def test_bad_command_arguments_are_refused_before_flower_is_asked(capsys, password_file, argv, expected):
    # The URL is a closed port: an argument checked only after a request would fail differently.
    url = f"https://127.0.0.1:{closed_port()}"
    line = refused(capsys, *argv, "--url", url, "--password-file", str(password_file))
    assert expected in line, line


def test_an_unreachable_proxy_is_one_line_and_exit_1(capsys, password_file):
    url = f"https://127.0.0.1:{closed_port()}"
    line = refused(capsys, "workers", "--url", url, "--password-file", str(password_file), code=1)
    assert line == f"celerykit admin workers: cannot reach {url}: connection refused"


def test_purge_refuses_without_the_queue_name_repeated(capsys):
    assert "the following arguments are required: --confirm" in refused(capsys, "purge", "low_priority")
    line = refused(capsys, "purge", "low_priority", "--confirm", "low")
    assert line == "celerykit admin purge: --confirm must repeat the queue name exactly ('low_priority'), got 'low'"


def test_purge_knows_the_queues_from_the_pool_settings(capsys, monkeypatch, tmp_path):
    redis_password = tmp_path / "redis_password"
    redis_password.write_text("another-long-password-2\n")
    monkeypatch.setenv("CELERYKIT_REDIS_PASSWORD_FILE", str(redis_password))
    monkeypatch.setenv("CELERYKIT_REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("CELERYKIT_REDIS_PORT", str(closed_port()))
    monkeypatch.delenv("CELERYKIT_POOLS", raising=False)
    line = refused(capsys, "purge", "nope", "--confirm", "nope", code=1)
    assert line == (
        "celerykit admin purge: unknown queue 'nope': no pool of CELERYKIT_POOLS consumes it "
        "(high_priority, medium_priority, default, low_priority)"
    )
    # A known queue gets as far as the broker (here a closed port: one line, exit 1).
    line = refused(capsys, "purge", "low_priority", "--confirm", "low_priority", code=1)
    assert line.startswith("celerykit admin purge: cannot reach the broker at 127.0.0.1:")
    # The deployment's own pools, as the exporter reads them.
    monkeypatch.setenv("CELERYKIT_POOLS", "reports")
    monkeypatch.setenv("CELERYKIT_REPORTS_QUEUES", "reports")
    assert "unknown queue 'low_priority'" in refused(
        capsys, "purge", "low_priority", "--confirm", "low_priority", code=1
    )
    assert "cannot reach the broker" in refused(capsys, "purge", "reports", "--confirm", "reports", code=1)


def test_purge_says_what_happens_to_reserved_messages(capsys):
    with pytest.raises(SystemExit):
        main(["admin", "purge", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "they stay with that worker, and come back to the queue only if that worker dies" in text
