"""Invalid inventory settings, one per case, given to the playbook a converged deployment was made
with: each run fails in the preflight with a message naming the setting, prints no secret, and
every host stays exactly as it was (files, units, processes).

Run in one scenario only (the all-in-one): each case is a full ansible-playbook start plus the
preflight, the same on one host as on four.
"""

from __future__ import annotations

import json
from pathlib import Path

import drills
import pytest
import testinfra
from conftest import all_secrets, hosts, playbook

GOOD_SOFT, GOOD_HARD = 300, 600


def pools(**change) -> list[dict]:
    pool = {"name": "high", "queues": ["high_priority"], "concurrency": 2, "time_limit": GOOD_HARD}
    return [{**pool, "soft_time_limit": GOOD_SOFT, **change}]


# (case id, extra vars, the setting the message must name, further words it must hold)
CASES = [
    ("redis-password-empty", {"celerykit_redis_password": ""}, "celerykit_redis_password", []),
    ("redis-password-short", {"celerykit_redis_password": "Sh0rt-pass"}, "celerykit_redis_password", []),
    ("redis-password-default", {"celerykit_redis_password": "administrator"}, "celerykit_redis_password", []),
    ("app-redis-password-empty", {"celerykit_app_redis_password": ""}, "celerykit_app_redis_password", []),
    ("flower-password-empty", {"celerykit_flower_password": ""}, "celerykit_flower_password", []),
    ("flower-password-default", {"celerykit_flower_password": "Administrator"}, "celerykit_flower_password", []),
    ("flower-user-with-colon", {"celerykit_flower_user": "ad:min"}, "celerykit_flower_user", []),
    (
        "flower-cookie-secret-short",
        {"celerykit_flower_cookie_secret": "tooshort"},
        "celerykit_flower_cookie_secret",
        [],
    ),
    ("no-pools", {"celerykit_worker_pools": []}, "celerykit_worker_pools", []),
    ("unknown-pool-key", {"celerykit_worker_pools": pools(concurency=4)}, "concurency", []),
    ("duplicate-pool-names", {"celerykit_worker_pools": pools() + pools()}, "celerykit_worker_pools", ["high"]),
    ("pool-name-with-space", {"celerykit_worker_pools": pools(name="high pool")}, "celerykit_worker_pools", []),
    (
        "queue-name-with-space",
        {"celerykit_worker_pools": pools(queues=["high priority"])},
        "celerykit_worker_pools",
        ["queues"],
    ),
    ("concurrency-zero", {"celerykit_worker_pools": pools(concurrency=0)}, "celerykit_worker_pools", ["concurrency"]),
    (
        "soft-limit-equals-hard",
        {"celerykit_worker_pools": pools(soft_time_limit=GOOD_HARD)},
        "celerykit_worker_pools",
        ["soft_time_limit"],
    ),
    (
        "hard-limit-above-visibility",
        {"celerykit_worker_pools": pools(), "celerykit_app_visibility_timeout": 120},
        "celerykit_app_visibility_timeout",
        ["time_limit"],
    ),
    ("visibility-timeout-tiny", {"celerykit_app_visibility_timeout": 10}, "celerykit_app_visibility_timeout", []),
    (
        "broker-retries-zero",
        {"celerykit_app_broker_connection_max_retries": 0},
        "celerykit_app_broker_connection_max_retries",
        [],
    ),
    ("redis-port-too-big", {"celerykit_redis_port": 70000}, "celerykit_redis_port", []),
    ("flower-port-too-big", {"celerykit_flower_port": 99999}, "celerykit_flower_port", []),
    ("https-port-zero", {"celerykit_proxy_https_port": 0}, "celerykit_proxy_https_port", []),
    (
        "http-equals-https-port",
        {"celerykit_proxy_http_port": 8443, "celerykit_proxy_https_port": 8443},
        "celerykit_proxy_http_port",
        [],
    ),
    (
        "certificate-missing",
        {
            "celerykit_proxy_tls_certificate": "/nonexistent/tls.crt",
            "celerykit_proxy_tls_certificate_key": "/nonexistent/tls.key",
        },
        "celerykit_proxy_tls_certificate",
        [],
    ),
    (
        "pip-ca-bundle-missing",
        {"celerykit_app_pip_ca_bundle": "/nonexistent/ca.pem"},
        "celerykit_app_pip_ca_bundle",
        [],
    ),
]
SECRET_CASE_VALUES = {"Sh0rt-pass", "tooshort"}

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
    return {host.backend.host: fingerprint(host) for host in hosts("all")}


@pytest.fixture(scope="module")
def secret_values() -> set[str]:
    return all_secrets()


def assert_rejected(result, setting: str, words: list[str], before: dict[str, str], secret_values: set[str]):
    output = result.stdout + result.stderr
    failed = [line for line in output.splitlines() if "fatal:" in line or '"msg"' in line or "failed:" in line]
    print(f"\nrc={result.returncode}: " + " | ".join(line.strip()[:300] for line in failed[:3]))
    assert result.returncode != 0
    assert setting in output, output[-3000:]
    for word in words:
        assert word in output, output[-3000:]
    assert "PLAY [Deploy" not in output, "the run went past the preflight"
    leaked = [value for value in secret_values if value in output]
    assert not leaked, "a secret appears in the playbook's output"
    after = {host.backend.host: fingerprint(host) for host in hosts("all")}
    assert after == before, "a host changed"


@pytest.mark.parametrize(("extra", "setting", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_setting_is_refused_before_any_host_changes(
    extra: dict, setting: str, words: list[str], before: dict[str, str], secret_values: set[str], tmp_path: Path
):
    result = playbook(extra_vars=extra, tmp=tmp_path)
    given = {value for value in SECRET_CASE_VALUES if value in json.dumps(extra)}
    assert_rejected(result, setting, words, before, secret_values | given)


def test_a_second_beat_host_is_refused(before: dict[str, str], secret_values: set[str], tmp_path: Path):
    """Two hosts in celery_beat (one more from a further inventory source): Beat would run twice."""
    extra = tmp_path / "second-beat.yml"
    extra.write_text(
        "celery_beat:\n  hosts:\n    second-beat:\n      ansible_connection: local\n"
        "      ansible_python_interpreter: '{{ ansible_playbook_python }}'\n"
    )
    result = playbook("-i", str(extra))
    assert_rejected(result, "celerykit_beat_group", ["second-beat"], before, secret_values)


def test_the_cases_cover_enough_settings():
    settings = {setting for _, _, setting, _ in CASES}
    drills.record("systemd-bad-inputs", cases=len(CASES) + 1, settings=len(settings) + 1)
    assert len(CASES) + 1 >= 20
