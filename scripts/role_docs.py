#!/usr/bin/env python3
"""Write the configuration tables into README.md, so that no default is written there by hand:
- the roles': types and meanings from each role's meta/argument_specs.yml, defaults from its
  defaults/main.yml (the kit's own defaults resolved from src/celerykit/defaults.py);
- the compose stack's: the kit's defaults from src/celerykit/defaults.py, compose's own (ports,
  paths, names) from compose/compose.yaml.

scripts/role_docs.py           rewrite the section between the role-docs markers
scripts/role_docs.py --check   exit 1 if README.md is out of date (the unit tests run this)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from celerykit import defaults as kit  # noqa: E402
from celerykit.rules import MAX_REPLICAS  # noqa: E402

README = ROOT / "README.md"
START, END = "<!-- role-docs:start -->", "<!-- role-docs:end -->"
STACK_START, STACK_END = "<!-- stack-docs:start -->", "<!-- stack-docs:end -->"
COMPOSE = (ROOT / "compose" / "compose.yaml").read_text()


def compose_default(variable: str) -> str:
    (value,) = set(re.findall(r"\$\{" + variable + r":-([^}]*)\}", COMPOSE))
    return value


def pools(key: str) -> str:
    return ", ".join(str(kit.pool(p["name"])[key]) for p in kit.POOLS)


# The compose stack's variables: (variables, default, meaning).
STACK = [
    (
        "`CELERYKIT_HTTPS_PORT` / `CELERYKIT_HTTP_PORT`",
        lambda: f"`{compose_default('CELERYKIT_HTTPS_PORT')}` / `{compose_default('CELERYKIT_HTTP_PORT')}`",
        "published ports of nginx",
    ),
    (
        "`CELERYKIT_BIND`",
        lambda: f"`{compose_default('CELERYKIT_BIND')}`",
        "address the ports are published on (`0.0.0.0` to serve others)",
    ),
    (
        "`CELERYKIT_SERVER_NAME`",
        lambda: f"`{compose_default('CELERYKIT_SERVER_NAME')}`",
        "nginx `server_name` (and the self-signed certificate's name)",
    ),
    ("`CELERYKIT_METRICS_ALLOW`", lambda: "*(none)*", "space-separated networks allowed to read `/flower/metrics`"),
    ("`CELERYKIT_FLOWER_USER`", lambda: f"`{kit.FLOWER_USER}`", "Flower's basic-auth user"),
    ("`CELERYKIT_FLOWER_URL_PREFIX`", lambda: f"`{kit.FLOWER_URL_PREFIX}`", "path of Flower behind the proxy"),
    (
        "`CELERYKIT_FLOWER_MAX_TASKS`",
        lambda: f"`{kit.FLOWER_MAX_TASKS}`",
        "tasks Flower keeps in memory (Flower's own default, 100000, grows memory)",
    ),
    (
        "`CELERYKIT_FLOWER_STATE_SAVE_INTERVAL_MS`",
        lambda: f"`{kit.FLOWER_STATE_SAVE_INTERVAL_MS}`",
        "how often Flower saves its state",
    ),
    (
        "`CELERYKIT_FLOWER_PURGE_OFFLINE_WORKERS`",
        lambda: f"`{kit.FLOWER_PURGE_OFFLINE_WORKERS}`",
        "seconds before an offline worker disappears",
    ),
    (
        "`CELERYKIT_HIGH_QUEUES`, `_MEDIUM_QUEUES`, `_LOW_QUEUES`",
        lambda: "; ".join(f"`{','.join(p['queues'])}`" for p in kit.POOLS),
        "queues of each pool (comma-separated)",
    ),
    (
        "`CELERYKIT_HIGH_CONCURRENCY`, `_MEDIUM_`, `_LOW_`",
        lambda: f"`{pools('concurrency')}`",
        "processes per pool (1-256)",
    ),
    (
        "`CELERYKIT_HIGH_MAX_CONCURRENCY`, `_MEDIUM_`, `_LOW_`",
        lambda: f"`{pools('max_concurrency')}`",
        "processes a pool may grow to under load, back to its concurrency when idle (0: a fixed size)",
    ),
    (
        "`CELERYKIT_HIGH_REPLICAS`, `_MEDIUM_`, `_LOW_`",
        lambda: "`" + ", ".join(compose_default(f"CELERYKIT_{p['name'].upper()}_REPLICAS") for p in kit.POOLS) + "`",
        f"containers per pool (1-{MAX_REPLICAS}), each a worker `<pool>@<container id>`; `scripts/stack` replaces"
        " them one at a time",
    ),
    (
        "`CELERYKIT_HIGH_PREFETCH_MULTIPLIER`, `_MEDIUM_`, `_LOW_`",
        lambda: f"`{pools('prefetch_multiplier')}`",
        "messages reserved per process",
    ),
    (
        "`CELERYKIT_HIGH_MAX_TASKS_PER_CHILD`, `_MEDIUM_`, `_LOW_`",
        lambda: f"`{pools('max_tasks_per_child')}`",
        "tasks a process runs before it is replaced",
    ),
    (
        "`CELERYKIT_HIGH_MAX_MEMORY_PER_CHILD`, `_MEDIUM_`, `_LOW_`",
        lambda: f"`{pools('max_memory_per_child')}`",
        "resident MiB past which a process is replaced after its task (0: no limit)",
    ),
    (
        "`CELERYKIT_TIME_LIMIT` / `CELERYKIT_SOFT_TIME_LIMIT`",
        lambda: f"`{kit.POOL['time_limit']}` / `{kit.POOL['soft_time_limit']}`",
        "hard/soft task time limits (soft < hard < visibility timeout)",
    ),
    (
        "`CELERYKIT_VISIBILITY_TIMEOUT`",
        lambda: f"`{kit.VISIBILITY_TIMEOUT}`",
        "Redis redelivery timeout for unacknowledged tasks",
    ),
    (
        "`CELERYKIT_WORKER_STOP_GRACE_PERIOD`",
        lambda: f"`{compose_default('CELERYKIT_WORKER_STOP_GRACE_PERIOD')}`",
        "time a stopping worker gets to finish running tasks",
    ),
    (
        "`CELERYKIT_BROKER_CONNECTION_MAX_RETRIES`",
        lambda: f"`{kit.BROKER_CONNECTION_MAX_RETRIES}`",
        "broker reconnection attempts before a worker exits (and is restarted)",
    ),
    ("`CELERYKIT_LOG_LEVEL`", lambda: f"`{kit.LOG_LEVEL}`", "Celery log level"),
    (
        "`CELERYKIT_LOG_FORMAT`",
        lambda: f"`{kit.LOG_FORMAT}`",
        "`json` (one object per line: time, level, logger, message, pool, hostname, task id) or `text`",
    ),
    (
        "`CELERYKIT_BACKLOG_WARNING` / `CELERYKIT_BACKLOG_CRITICAL`",
        lambda: f"`{kit.BACKLOG_WARNING}` / `{kit.BACKLOG_CRITICAL}`",
        "waiting messages above which a queue's backlog alert fires",
    ),
    (
        "`CELERYKIT_BACKLOG_THRESHOLDS`",
        lambda: "*(empty)*",
        "thresholds of single queues: `low_priority=5000/20000,default=100/2000`",
    ),
    (
        "`CELERYKIT_REDIS_MAXMEMORY`",
        lambda: f"`{kit.REDIS_MAXMEMORY}`",
        "Redis refuses writes beyond this (`512mb`, `2gb`; `0`: no limit); nothing queued is evicted",
    ),
    (
        "`CELERYKIT_REDIS_TLS`",
        lambda: "`false`",
        "`true`: every service reaches Redis over TLS only (its plain port closed); `init` makes the stack's own "
        "CA and Redis's certificate for the name `redis` in the secrets directory (`redis-ca.crt`, "
        "`redis-server.crt`; the keys root's only), or keeps yours; clients check both",
    ),
    ("`CELERYKIT_PROMETHEUS_RETENTION`", lambda: f"`{kit.PROMETHEUS_RETENTION}`", "how long Prometheus keeps samples"),
    (
        "`CELERYKIT_ALERT_SMARTHOST` / `CELERYKIT_ALERT_MAIL_TO` / `CELERYKIT_ALERT_MAIL_FROM`",
        lambda: "*(empty)* / *(empty)* / `celerykit@localhost`",
        "alert mail: relay `host:port`, recipients (comma-separated), sender; no smarthost, no mail",
    ),
    (
        "`CELERYKIT_ALERT_SMTP_USER` / `CELERYKIT_ALERT_SMTP_PASSWORD_FILE` / `CELERYKIT_ALERT_SMTP_REQUIRE_TLS`",
        lambda: "*(empty)* / *(empty)* / `true`",
        "relay login (the password in a file, as the container sees it) and STARTTLS",
    ),
    (
        "`CELERYKIT_ALERT_WEBHOOK_URL`",
        lambda: "*(empty)*",
        "http(s) URL that gets every alert as JSON (and the Watchdog every 5 min)",
    ),
    (
        "`CELERYKIT_DEMO_HEARTBEAT_SECONDS` / `CELERYKIT_DEMO_RETRY_DELAY_SECONDS`",
        lambda: (
            f"`{compose_default('CELERYKIT_DEMO_HEARTBEAT_SECONDS')}`"
            f" / `{compose_default('CELERYKIT_DEMO_RETRY_DELAY_SECONDS')}`"
        ),
        "demo app's schedule and retry delay",
    ),
    (
        "`CELERYKIT_SECRETS_DIR` / `CELERYKIT_TLS_DIR`",
        lambda: (
            f"`{compose_default('CELERYKIT_SECRETS_DIR')}` / `{compose_default('CELERYKIT_TLS_DIR')}` (in `compose/`)"
        ),
        "where secrets and the certificate live",
    ),
    ("`CELERYKIT_PROJECT`", lambda: f"`{compose_default('CELERYKIT_PROJECT')}`", "compose project name"),
]


def stack_table() -> str:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    rows += [f"| {variables} | {default()} | {meaning} |" for variables, default, meaning in STACK]
    return "\n".join(rows)


KIT_DEFAULT = re.compile(r"^\{\{ lookup\('celerykit\.platform\.kit_default', '(\w+)'\) \}\}$")


def cell(text: object) -> str:
    """Argument-spec markup (C(x), I(x)) as Markdown, fit for a table cell."""
    text = " ".join(text) if isinstance(text, list) else str(text)
    text = re.sub(r"[CI]\(([^)]*)\)", r"`\1`", text)
    return text.replace("|", "\\|").replace("\n", " ")


def effective(value: object) -> object:
    """A role default as it applies: a kit default looked up is shown with its value."""
    if isinstance(value, str) and (match := KIT_DEFAULT.match(value.strip())):
        return kit.as_dict()[match.group(1)]
    return value


def shown(value: object, required: bool = False) -> str:
    if required:
        return "**required**"
    if value in ("", [], {}, None):
        return "*(empty)*"
    if isinstance(value, str) and "{{" in value:
        return "*(derived: see meaning)*"
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return f"`{' '.join(str(text).split())}`".replace("|", "\\|")


def rows(role: Path) -> list[str]:
    options = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    values = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
    table = ["| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, option in options.items():
        kind = option.get("type", "str") + (f" of {option['elements']}" if option.get("elements") else "")
        value = shown(effective(values.get(name)), option.get("required", False))
        table.append(f"| `{name}` | {kind} | {value} | {cell(option.get('description', ''))} |")
        for sub, suboption in (option.get("options") or {}).items():
            subvalue = shown(
                kit.POOL.get(sub, [] if suboption.get("type") == "list" else None), suboption.get("required")
            )
            kind, meaning = suboption.get("type", "str"), cell(suboption["description"])
            table.append(f"| &nbsp;&nbsp;`.{sub}` | {kind} | {subvalue} | {meaning} |")
    return table


def role_tables() -> str:
    sections = []
    for role in sorted(p.parents[1] for p in ROOT.glob("roles/*/meta/argument_specs.yml")):
        main = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]
        title = f"**celerykit.platform.{role.name}**: {cell(main['short_description'])}"
        sections.append(title + "\n\n" + "\n".join(rows(role)))
    return "\n\n".join(sections)


def replace(text: str, start: str, end: str, content: str) -> str:
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    return f"{before}{start}\n{content}\n{end}{after}"


def main() -> int:
    text = README.read_text()
    updated = replace(replace(text, START, END, role_tables()), STACK_START, STACK_END, stack_table())
    if "--check" in sys.argv[1:]:
        if updated != text:
            print("README.md's configuration tables are out of date: run scripts/role_docs.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
