"""`celerykit` command: start a service, prepare secrets, verify and operate a deployment.

The services' health checks are `python3 -m celerykit.health SERVICE` (lighter than this command)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from celerykit.settings import ConfigError, Env

COMMANDS = {  # subcommands whose module builds its own arguments (build_parser) and runs them (main)
    "verify": "check a deployment from outside",
    "admin": "operate a deployment: workers, queues, revoke, pools, purge",
    "pools": "drain pools, wait until they consume, report on them",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="celerykit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for service in ("worker", "beat", "flower"):
        run = sub.add_parser(service, help=f"run the {service} (settings from CELERYKIT_* variables)")
        run.add_argument("extra", nargs=argparse.REMAINDER, help="passed on to celery")
    sub.add_parser("exporter", help="serve the queue, pool, Redis and Beat metrics for Prometheus")
    init = sub.add_parser("init-secrets", help="generate missing secrets, refuse empty or weak ones")
    init.add_argument("directory", type=Path)
    init.add_argument("--group", type=int, help="gid that may read the secrets")
    # These three import Celery's client side, an HTTP client and more: only the one asked for is
    # imported, so starting a service does not pay for them.
    argv = sys.argv[1:] if argv is None else list(argv)
    asked = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, summary in COMMANDS.items():
        command = sub.add_parser(name, help=summary)
        if name == asked:
            importlib.import_module(f"celerykit.{name}").build_parser(command)
    args = parser.parse_args(argv)
    env = Env.current()
    try:
        if args.command in ("worker", "beat", "flower"):
            from celerykit.services import exec_service

            exec_service(args.command, env, args.extra)
        if args.command == "exporter":
            from celerykit.exporter import serve

            serve(env)
        if args.command == "init-secrets":
            from celerykit.secrets import ensure_redis_tls, ensure_secrets
            from celerykit.settings import redis_tls_names

            generated = ensure_secrets(args.directory, args.group)
            if names := redis_tls_names(env):
                generated += ensure_redis_tls(args.directory, names)
            for path in generated:
                print(f"celerykit: generated {path.name}", file=sys.stderr)
            return 0
        if args.command in COMMANDS:
            return importlib.import_module(f"celerykit.{args.command}").main(args)
        return 0
    except ConfigError as error:
        for line in str(error).splitlines():
            print(f"celerykit: configuration error: {line}", file=sys.stderr)
        return 78  # EX_CONFIG: systemd and compose show it as a configuration failure
