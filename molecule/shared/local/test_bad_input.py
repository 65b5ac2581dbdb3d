"""Invalid inventory settings given to the playbook a converged deployment was made with: each run
fails in the check play with the kit's lines naming the variable, prints no secret, and every host
stays exactly as it was (files, units, processes).

Every rule is shown once, on a real check run, in tests/collection/test_check_playbook.py; here a
few cases show it end to end on deployed hosts. Run in one scenario only (the default, all-in-one):
each case is a full ansible-playbook start, the same on one host as on four.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import testinfra
from conftest import all_secrets, hosts, playbook

GOOD_SOFT, GOOD_HARD = 300, 600


def pools(**change) -> list[dict]:
    pool = {"name": "high", "queues": ["high_priority"], "concurrency": 2, "time_limit": GOOD_HARD}
    return [{**pool, "soft_time_limit": GOOD_SOFT, **change}]


# (case id, extra vars, the lines the refusal must hold: the kit's validator's own)
CASES = [
    (
        "concurrency-zero",
        {"celerykit_worker_pools": pools(concurrency=0)},
        ["celerykit_worker_pools[0] (high): concurrency must be between 1 and 256, got 0"],
    ),
    (
        "redis-password-short",
        {"celerykit_redis_password": "Sh0rt-pass"},
        ["celerykit_redis_password must be at least 12 characters long, got 10"],
    ),
    (
        "http-equals-https-port",
        {"celerykit_proxy_http_port": 8443, "celerykit_proxy_https_port": 8443},
        ["celerykit_proxy_http_port must differ from celerykit_proxy_https_port (8443), got 8443"],
    ),
    (
        "several-at-once",
        {"celerykit_worker_pools": pools(concurrency=0, soft_time_limit=GOOD_HARD)},
        [
            "celerykit_worker_pools[0] (high): concurrency must be between 1 and 256, got 0",
            "celerykit_worker_pools[0] (high): soft_time_limit must be below time_limit (600), got 600",
        ],
    ),
]
SECRET_CASE_VALUES = {"Sh0rt-pass"}

UNITS_PATTERN = "redis-server.service nginx.service flower.service celery-beat.service 'celery-worker@*.service'"
FINGERPRINT = (
    "find /etc/celerykit /etc/redis /etc/nginx /etc/systemd/system -xdev \\( -type f -o -type l \\) 2>/dev/null"
    " | sort | xargs -d '\\n' sha256sum 2>/dev/null;"
    f" systemctl show -p Id -p MainPID -p ActiveEnterTimestamp -p UnitFileState --no-pager {UNITS_PATTERN}"
)


def fingerprint(host: testinfra.host.Host) -> str:
    return host.check_output(FINGERPRINT)


@pytest.fixture(scope="module")
def before() -> dict[str, str]:
    """The hosts once they are still: the same fingerprint twice, 3 s apart (a drill before this
    module may have left a unit starting again)."""
    deadline = time.monotonic() + 120
    last = None
    while (now := {host.backend.host: fingerprint(host) for host in hosts("all")}) != last:
        assert time.monotonic() < deadline, "the hosts kept changing before the bad inputs were given"
        last = now
        time.sleep(3)
    return now


@pytest.fixture(scope="module")
def secret_values() -> set[str]:
    return all_secrets()


def assert_rejected(result, lines: list[str], before: dict[str, str], secret_values: set[str]):
    output = result.stdout + result.stderr
    failed = [line for line in output.splitlines() if "fatal:" in line or '"msg"' in line or "failed:" in line]
    print(f"\nrc={result.returncode}: " + " | ".join(line.strip()[:300] for line in failed[:3]))
    assert result.returncode != 0
    for line in lines:
        assert line in output, output[-3000:]
    assert "no host was changed" in output or len(hosts("all")) == 1, output[-3000:]
    assert "PLAY [Deploy" not in output, "the run went past the check"
    leaked = [value for value in secret_values if value in output]
    assert not leaked, "a secret appears in the playbook's output"
    after = {host.backend.host: fingerprint(host) for host in hosts("all")}
    assert after == before, "a host changed"


@pytest.mark.parametrize(("extra", "lines"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_setting_is_refused_before_any_host_changes(
    extra: dict, lines: list[str], before: dict[str, str], secret_values: set[str], tmp_path: Path
):
    result = playbook(extra_vars=extra, tmp=tmp_path)
    given = {value for value in SECRET_CASE_VALUES if value in json.dumps(extra)}
    assert_rejected(result, lines, before, secret_values | given)


def test_a_second_beat_host_is_refused(before: dict[str, str], secret_values: set[str], tmp_path: Path):
    """Two hosts in celery_beat (one more from a further inventory source): Beat would run twice."""
    extra = tmp_path / "second-beat.yml"
    extra.write_text(
        "celery_beat:\n  hosts:\n    second-beat:\n      ansible_connection: local\n"
        "      ansible_python_interpreter: '{{ ansible_playbook_python }}'\n"
    )
    result = playbook("-i", str(extra))
    assert_rejected(
        result, ["must hold exactly one host, or periodic tasks run twice", "second-beat"], before, secret_values
    )
