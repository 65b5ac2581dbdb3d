"""`celerykit verify`: run the black-box checks against a deployment and report pass/fail per check."""

from __future__ import annotations

import argparse
import json
import os
import sys

from celerykit import defaults
from celerykit.settings import DEFAULT_POOLS
from celerykit.verify import checks
from celerykit.verify.checks import Pools, Result
from celerykit.verify.target import Target

__all__ = ["Result", "Target", "checks", "main", "run"]


def run(target: Target, pools: Pools, websocket_path: str | None = None) -> list[Result]:
    results = [
        checks.tls_versions(target),
        checks.hsts(target),
        checks.auth_required(target),
        checks.auth_accepted(target),
        checks.metrics_hidden(target),
        checks.workers(target, pools),
        checks.routing(target, pools),
    ]
    if target.http_url:
        results.insert(0, checks.https_redirect(target))
    if websocket_path:
        results.append(checks.websocket(target, websocket_path))
    return results


def parse_pool(spec: str) -> tuple[str, tuple[str, ...]]:
    name, sep, queues = spec.partition("=")
    if not sep or not name or not queues:
        raise argparse.ArgumentTypeError(f"expected NAME=QUEUE[,QUEUE...], got {spec!r}")
    return name, tuple(queues.split(","))


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("url", help="HTTPS URL of the proxy, e.g. https://flower.example.com")
    parser.add_argument("--http-url", help="plain HTTP URL that must redirect to HTTPS")
    parser.add_argument("--user", default=os.environ.get("CELERYKIT_FLOWER_USER") or defaults.FLOWER_USER)
    parser.add_argument(
        "--password-file",
        default=os.environ.get("CELERYKIT_FLOWER_PASSWORD_FILE"),
        help="file holding Flower's password (never pass passwords on the command line)",
    )
    parser.add_argument("--flower-path", default="/flower/")
    parser.add_argument("--ca-file", help="CA bundle that signed the proxy's certificate")
    parser.add_argument("--insecure", action="store_true", help="do not verify the certificate")
    parser.add_argument(
        "--pool",
        action="append",
        type=parse_pool,
        metavar="NAME=QUEUES",
        help="expected pool and its queues (repeat; default: the kit's high/medium/low pools)",
    )
    parser.add_argument("--websocket-path", help="a WebSocket echo endpoint behind the proxy to test")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(args: argparse.Namespace) -> int:
    if not args.password_file:
        print("verify: give --password-file (or set CELERYKIT_FLOWER_PASSWORD_FILE)", file=sys.stderr)
        return 2
    with open(args.password_file) as handle:
        password = handle.read().strip()
    target = Target(
        url=args.url.rstrip("/"),
        http_url=args.http_url.rstrip("/") if args.http_url else None,
        user=args.user,
        password=password,
        flower_path=args.flower_path,
        ca_file=args.ca_file,
        insecure=args.insecure,
    )
    pools: Pools = dict(args.pool) if args.pool else {name: queues for name, (queues, _) in DEFAULT_POOLS.items()}
    results = run(target, pools, args.websocket_path)
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        width = max(len(r.name) for r in results)
        for r in results:
            print(f"{'PASS' if r.ok else 'FAIL'}  {r.name:<{width}}  {r.detail}")
        passed = sum(r.ok for r in results)
        print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if all(results) else 1
