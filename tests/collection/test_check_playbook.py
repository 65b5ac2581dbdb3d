"""The inventory check (`celerykit.platform.check`, the first play of the site playbook) refuses every
bad setting with one line naming the variable, on a real ansible-playbook run.

Each case is one host of a local inventory (connection `local`, nothing is deployed: the check
playbook only reads facts and runs the kit's validator on the controller), so one run shows all
of them at once; the Molecule suite shows a few of them end to end against deployed hosts.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GOOD_SOFT, GOOD_HARD = 300, 600


def pools(**change) -> list[dict]:
    return [{"name": "high", "queues": ["high_priority"], "concurrency": 2, "time_limit": GOOD_HARD,
             "soft_time_limit": GOOD_SOFT, **change}]  # fmt: skip


# (case, variables, the lines the run must refuse it with). A line is the whole message of the
# kit's validator; for types and unknown keys Ansible's own argument-spec check answers.
CASES = [
    ("redis-password-empty", {"celerykit_redis_password": ""}, ["celerykit_redis_password must not be empty"]),
    (
        "redis-password-short",
        {"celerykit_redis_password": "Sh0rt-pass"},
        ["celerykit_redis_password must be at least 12 characters long, got 10"],
    ),
    (
        "redis-password-default",
        {"celerykit_redis_password": "administrator"},
        ["celerykit_redis_password is a well-known default password: choose or generate another"],
    ),
    (
        "app-redis-password-empty",
        {"celerykit_app_redis_password": ""},
        ["celerykit_app_redis_password must not be empty"],
    ),
    ("flower-password-empty", {"celerykit_flower_password": ""}, ["celerykit_flower_password must not be empty"]),
    (
        "flower-password-default",
        {"celerykit_flower_password": "Administrator"},
        ["celerykit_flower_password is a well-known default password: choose or generate another"],
    ),
    (
        "flower-user-with-colon",
        {"celerykit_flower_user": "ad:min"},
        ["celerykit_flower_user must not contain ':' or ',', got 'ad:min'"],
    ),
    (
        "flower-cookie-secret-short",
        {"celerykit_flower_cookie_secret": "tooshort"},
        ["celerykit_flower_cookie_secret must be at least 32 characters long, got 8 (or empty, to have one generated)"],
    ),
    ("no-pools", {"celerykit_worker_pools": []}, ["celerykit_worker_pools must list at least one pool, got []"]),
    (
        "rolling-timeouts",
        {"celerykit_worker_ready_timeout": 0, "celerykit_worker_drain_timeout": -1},
        [
            "celerykit_worker_drain_timeout must be at least 0, got -1",
            "celerykit_worker_ready_timeout must be at least 1, got 0",
        ],
    ),
    ("unknown-pool-key", {"celerykit_worker_pools": pools(concurency=4)}, None),
    (
        "duplicate-pool-names",
        {"celerykit_worker_pools": pools() + pools(queues=["other"])},
        ["celerykit_worker_pools must not name a pool twice, got ['high', 'high']"],
    ),
    (
        "pool-name-with-space",
        {"celerykit_worker_pools": pools(name="high pool")},
        ["celerykit_worker_pools[0] (high pool): name must match ^[a-z][a-z0-9_-]*$, got 'high pool'"],
    ),
    (
        "queue-name-with-space",
        {"celerykit_worker_pools": pools(queues=["high priority"])},
        [
            "celerykit_worker_pools[0] (high): queues must be names of letters, digits, '_', '.', ':', '-',"
            " got ['high priority']"
        ],
    ),
    (
        "concurrency-zero",
        {"celerykit_worker_pools": pools(concurrency=0)},
        ["celerykit_worker_pools[0] (high): concurrency must be between 1 and 256, got 0"],
    ),
    (
        "autoscale-below-concurrency",
        {"celerykit_worker_pools": pools(concurrency=4, max_concurrency=2)},
        [
            "celerykit_worker_pools[0] (high): max_concurrency must be 0 (a fixed size) or at least concurrency (4),"
            " got 2"
        ],
    ),
    (
        "soft-limit-equals-hard",
        {"celerykit_worker_pools": pools(soft_time_limit=GOOD_HARD)},
        ["celerykit_worker_pools[0] (high): soft_time_limit must be below time_limit (600), got 600"],
    ),
    (
        "hard-limit-above-visibility",
        {"celerykit_worker_pools": pools(), "celerykit_app_visibility_timeout": 120},
        ["celerykit_worker_pools[0] (high): time_limit must be below celerykit_app_visibility_timeout (120), got 600"],
    ),
    (
        "visibility-timeout-tiny",
        {"celerykit_app_visibility_timeout": 10},
        ["celerykit_app_visibility_timeout must be at least 60, got 10"],
    ),
    (
        "broker-retries-zero",
        {"celerykit_app_broker_connection_max_retries": 0},
        ["celerykit_app_broker_connection_max_retries must be at least 1, got 0"],
    ),
    (
        "redis-tls-word",
        {"celerykit_redis_tls": "maybe"},
        ["celerykit_redis_tls must be one of AUTO, TRUE, FALSE, got 'maybe'"],
    ),
    (
        "app-redis-tls-word",
        {"celerykit_app_redis_tls": "yes"},
        ["celerykit_app_redis_tls must be one of AUTO, TRUE, FALSE, got 'yes'"],
    ),
    (
        "redis-tls-certificate-alone",
        {"celerykit_redis_tls_cert": "/etc/hostname"},
        [
            "celerykit_redis_tls_cert goes with celerykit_redis_tls_key, celerykit_redis_tls_ca: give "
            "celerykit_redis_tls_cert and celerykit_redis_tls_key and celerykit_redis_tls_ca, or none, "
            "got ['/etc/hostname', '', '']"
        ],
    ),
    (
        "redis-ca-missing",
        {"celerykit_app_redis_ca": "/nonexistent/ca.crt"},
        ["celerykit_app_redis_ca must be a file on the controller, got '/nonexistent/ca.crt'"],
    ),
    (
        "redis-port-too-big",
        {"celerykit_redis_port": 70000},
        ["celerykit_redis_port must be between 1 and 65535, got 70000"],
    ),
    (
        "flower-port-too-big",
        {"celerykit_flower_port": 99999},
        ["celerykit_flower_port must be between 1 and 65535, got 99999"],
    ),
    (
        "https-port-zero",
        {"celerykit_proxy_https_port": 0},
        ["celerykit_proxy_https_port must be between 1 and 65535, got 0"],
    ),
    (
        "http-equals-https-port",
        {"celerykit_proxy_http_port": 8443, "celerykit_proxy_https_port": 8443},
        ["celerykit_proxy_http_port must differ from celerykit_proxy_https_port (8443), got 8443"],
    ),
    (
        "certificate-missing",
        {
            "celerykit_proxy_tls_certificate": "/nonexistent/tls.crt",
            "celerykit_proxy_tls_certificate_key": "/nonexistent/tls.key",
        },
        [
            "celerykit_proxy_tls_certificate must be a file on the controller, got '/nonexistent/tls.crt'",
            "celerykit_proxy_tls_certificate_key must be a file on the controller, got '/nonexistent/tls.key'",
        ],
    ),
    (
        "certificate-without-key",
        {"celerykit_proxy_tls_certificate": "/etc/hostname"},
        [
            "celerykit_proxy_tls_certificate and celerykit_proxy_tls_certificate_key go together: give both files,"
            " or neither for a self-signed pair, got ['/etc/hostname', '']"
        ],
    ),
    (
        "pip-ca-bundle-missing",
        {"celerykit_app_pip_ca_bundle": "/nonexistent/ca.pem"},
        ["celerykit_app_pip_ca_bundle must be a file on the controller, got '/nonexistent/ca.pem'"],
    ),
    (
        "prometheus-retention-unknown-unit",
        {"celerykit_prometheus_retention": "15x"},
        ["celerykit_prometheus_retention must be a Prometheus duration such as 15d, 12h or 2w, got '15x'"],
    ),
    (
        "smarthost-without-port",
        {"celerykit_alertmanager_smarthost": "mail.example.com", "celerykit_alertmanager_mail_to": ["o@example.com"]},
        ["celerykit_alertmanager_smarthost must be host:port (a port between 1 and 65535), got 'mail.example.com'"],
    ),
    (
        "mail-without-receivers",
        {"celerykit_alertmanager_smarthost": "mail.example.com:25"},
        ["celerykit_alertmanager_mail_to must list at least one mail address, got []"],
    ),
    (
        "webhook-not-a-url",
        {"celerykit_alertmanager_webhook_url": "chat.example.com/hook"},
        ["celerykit_alertmanager_webhook_url must be an http:// or https:// URL, got 'chat.example.com/hook'"],
    ),
    (
        "backlog-warning-above-critical",
        {"celerykit_exporter_backlog_warning": 2000},
        ["celerykit_exporter_backlog_warning must be below celerykit_exporter_backlog_critical (1000), got 2000"],
    ),
    (
        "several-at-once",
        {"celerykit_worker_pools": pools(concurrency=0, prefetch_multiplier=0, soft_time_limit=GOOD_HARD)},
        [
            "celerykit_worker_pools[0] (high): concurrency must be between 1 and 256, got 0",
            "celerykit_worker_pools[0] (high): prefetch_multiplier must be at least 1, got 0",
            "celerykit_worker_pools[0] (high): soft_time_limit must be below time_limit (600), got 600",
        ],
    ),
]
GOOD_HOST = "all-good"


def good_variables() -> dict:
    redis = secrets.token_urlsafe(24)
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "celerykit_redis_password": redis,
        "celerykit_app_redis_password": redis,
        "celerykit_flower_password": secrets.token_urlsafe(24),
    }


def check(
    tmp_path: Path, hosts: dict[str, dict], beat_hosts: list[str], groups: dict[str, list[str]] | None = None
) -> dict[str, list[tuple[str, dict]]]:
    """Run the check playbook on these local hosts (each in every group unless `groups` says where);
    return each host's failed tasks (name, result)."""
    members = {"redis": list(hosts), "celery_workers": list(hosts), "flower": list(hosts), **(groups or {})}
    members["celery_beat"] = beat_hosts
    inventory = {
        "all": {
            "hosts": hosts,
            "children": {group: {"hosts": dict.fromkeys(names)} for group, names in members.items()},
        }
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_FORCE_COLOR="0", LANG="C.UTF-8")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        ["ansible-playbook", "-i", str(path), "playbooks/check.yml", "--forks", "10"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode != 0, result.stdout[-3000:]
    report = json.loads(result.stdout[result.stdout.index("{") :])
    failed: dict[str, list[tuple[str, dict]]] = {}
    for play in report["plays"]:
        for task in play["tasks"]:
            for host, outcome in task["hosts"].items():
                if outcome.get("failed"):
                    failed.setdefault(host, []).append((task["task"]["name"], outcome))
    return failed


@pytest.fixture(scope="module")
def failures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[str, dict]]]:
    hosts = {case: {**good_variables(), **variables} for case, variables, _ in CASES}
    hosts[GOOD_HOST] = good_variables()
    return check(tmp_path_factory.mktemp("check"), hosts, beat_hosts=[GOOD_HOST])


@pytest.mark.parametrize(("case", "lines"), [(c, lines) for c, _, lines in CASES], ids=[c for c, _, _ in CASES])
def test_a_bad_setting_is_refused_with_one_line_naming_it(failures, case: str, lines: list[str] | None):
    (task, outcome), *rest = failures[case]
    assert rest == [], rest
    if lines is None:  # a type or an unknown key: the role's argument spec answers
        assert "argument" in task and "concurency" in outcome["msg"], outcome["msg"]
        return
    assert task.endswith(("settings", "pools")), task
    assert outcome["msg"].splitlines() == lines


def test_a_host_whose_settings_pass_is_stopped_too_and_told_why(failures):
    """No host goes on to be deployed while another one failed the check."""
    ((task, outcome),) = failures[GOOD_HOST]
    assert task == "Stop unless every host passed"
    assert "failed the check: no host was changed" in outcome["msg"]
    assert set(outcome["msg"].split(" failed the check")[0].split(", ")) == {case for case, _, _ in CASES}


def test_a_second_beat_host_is_refused(tmp_path: Path):
    hosts = {"beat-a": good_variables(), "beat-b": good_variables()}
    failed = check(tmp_path, hosts, beat_hosts=["beat-a", "beat-b"])
    for host in hosts:
        ((_, outcome),) = failed[host]
        assert outcome["msg"] == (
            "celerykit_beat_group ('celery_beat') must hold exactly one host, or periodic tasks run twice,"
            " got ['beat-a', 'beat-b']"
        )


def test_no_secret_appears_in_the_output(tmp_path: Path):
    variables = good_variables()
    variables["celerykit_flower_password"] = "flower"  # noqa: S105 - refused (too short), never echoed
    failed = check(tmp_path, {"one": variables}, beat_hosts=["one"])
    text = json.dumps(failed)
    assert "celerykit_flower_password must be at least 12 characters long, got 6" in text
    for name in ("celerykit_redis_password", "celerykit_flower_password"):
        assert f'"{variables[name]}"' not in text


def sentinel_inventory(sentinels: int, **variables) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """A primary, a replica and `sentinels` Sentinels (on those and more hosts), every host a client."""
    names = [f"redis-{i}" for i in range(max(sentinels, 2))]
    shared = {
        **good_variables(),
        "celerykit_redis_replication_password": secrets.token_urlsafe(24),
        "celerykit_redis_sentinel_password": secrets.token_urlsafe(24),
    }
    shared["celerykit_app_redis_sentinel_password"] = shared["celerykit_redis_sentinel_password"]
    hosts = {name: {**shared, **variables} for name in names}
    groups = {"redis": names[:1], "redis_replicas": names[1:2], "redis_sentinels": names[:sentinels]}
    return hosts, groups


def test_two_sentinels_are_refused_for_what_they_cannot_do(tmp_path: Path):
    hosts, groups = sentinel_inventory(2)
    failed = check(tmp_path, hosts, beat_hosts=["redis-0"], groups=groups)
    for host in groups["redis_sentinels"]:
        messages = [outcome["msg"] for _, outcome in failed[host]]
        assert (
            "group redis_sentinels must list at least 3 Sentinels (a majority must survive the loss of one),"
            " got ['redis-0', 'redis-1']"
        ) in messages, messages


def test_a_master_name_the_sentinels_do_not_watch_is_refused(tmp_path: Path):
    hosts, groups = sentinel_inventory(3, celerykit_app_redis_sentinel_master="mymaster")
    failed = check(tmp_path, hosts, beat_hosts=["redis-0"], groups=groups)
    for host in hosts:
        ((task, outcome), *_) = failed[host]
        assert task.endswith("Check the app settings"), failed[host]
        assert outcome["msg"] == (
            "celerykit_app_redis_sentinel_master must be the name the Sentinels watch the primary under"
            " (celerykit), got 'mymaster'"
        )


def test_a_sentinel_inventory_passes_the_check(tmp_path: Path):
    """The two refusals above are the Sentinel rules' own: the same inventory with three passes."""
    hosts, groups = sentinel_inventory(3)
    hosts["redis-0"]["celerykit_flower_password"] = "flower"  # noqa: S105 - one refusal, so the run fails
    failed = check(tmp_path, hosts, beat_hosts=["redis-0"], groups=groups)
    assert [task for task, _ in failed["redis-1"]] == ["Stop unless every host passed"], failed["redis-1"]
