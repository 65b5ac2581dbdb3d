"""`celerykit admin`: operate a running deployment, through the proxy to Flower's API.

    celerykit admin workers                            name, pool, online, queues, processes, active tasks
    celerykit admin queues                             each queue's waiting messages
    celerykit admin revoke ID [ID ...] [--terminate [--signal SIGKILL]]
    celerykit admin revoke --task NAME --state PENDING every task of that name in that state
    celerykit admin shutdown WORKER                    warm shutdown; its service manager starts it again
    celerykit admin pool restart|grow|shrink WORKER [N]
    celerykit admin consumer add|cancel WORKER QUEUE
    celerykit admin purge QUEUE --confirm QUEUE        where Redis is reachable (a kit host, the stack's network)

All but `purge` call https://HOST:PORT/flower/api/... (--url) as Flower's user, with the password read
from a file and the certificate checked against --ca-file: they run from any machine with the kit
installed and need only the standard library (the `verify` command's Target does the HTTP). Flower's
API has no purge, so `purge` talks to the broker itself with the services' own settings
(CELERYKIT_REDIS_*, the pools of CELERYKIT_POOLS).

A command prints its result (a line, or one per worker or queue), or JSON with --json, and exits 0.
A failure (unknown worker, task or queue, a refused login, an unreachable proxy) is one line on
stderr and exit 1; a bad argument is one line and exit 2, and nothing is changed.
"""

from __future__ import annotations

import argparse
import json
import signal
import ssl
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, urlencode, urlsplit

from celerykit import defaults
from celerykit.settings import Env
from celerykit.verify.target import Response, Target

# The compose stack's proxy on this machine (compose's CELERYKIT_HTTPS_PORT default).
DEFAULT_URL = "https://127.0.0.1:8443"
URL_VARIABLE = "CELERYKIT_ADMIN_URL"
CA_VARIABLE = "CELERYKIT_ADMIN_CA_FILE"
PASSWORD_VARIABLE = "CELERYKIT_FLOWER_PASSWORD_FILE"  # noqa: S105 - a variable name, as Flower and `verify` read
# Unfinished states; a STARTED task stops only with --terminate (revoke alone skips it once it runs).
REVOCABLE = ("PENDING", "RECEIVED", "STARTED", "RETRY")
RESERVED_NOTE = (
    "Messages a worker has reserved (prefetched, or running and not yet acknowledged) are not waiting "
    "messages: they stay with that worker, and come back to the queue only if that worker dies."
)

WORKER_HELP = "a worker's name (`workers` lists them), or a pool's name when one worker of it is online"
Result = tuple[Any, list[str]]  # (what --json prints, the lines printed otherwise)


class AdminError(Exception):
    """A failure, reported as one line (exit 1)."""


class UsageError(AdminError):
    """A bad argument, reported as one line (exit 2); nothing was changed."""


class NotFound(AdminError):
    """Flower answered 404: the caller knows what was not found."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors on one line (playbooks and logs show it whole), not usage + error,
    and no abbreviated options: `--password SECRET` must not pass for `--password-file SECRET`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        # Unknown arguments are this command's error (one line), named but never echoed: the
        # value after a mistyped `--password` is a password.
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            options = [extra.split("=", 1)[0] for extra in extras if extra.startswith("-")]
            named = f"unrecognized option(s) {' '.join(options)}" if options else "unexpected argument(s)"
            self.error(f"{named} (values are not shown)")
        return namespace, extras


class Flower:
    """Flower's API behind the proxy; every way it can fail becomes one AdminError line."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def get(self, path: str, query: dict[str, Any] | None = None) -> Any:
        return self._call("GET", path, query)

    def post(self, path: str, query: dict[str, Any] | None = None) -> Any:
        return self._call("POST", path, query)

    def _call(self, method: str, path: str, query: dict[str, Any] | None) -> Any:
        url_path = self.target.flower("api/" + path) + (f"?{urlencode(query)}" if query else "")
        response = self._send(method, url_path)
        where = f"{self.target.url}{url_path.split('?')[0]}"
        if response.status == 401:
            raise AdminError(
                f"{self.target.url} refused user {self.target.user!r} (401): check --user and --password-file"
            )
        if response.status == 404:
            raise NotFound(f"no such resource at {where} (404): is --url the kit's proxy?")
        if response.status != 200:
            # 403 carries Flower's reason ("Failed to shrink ... pool: ..."); 502-504 mean Flower is away.
            raise AdminError(
                f"{method} {where} answered {response.status}: {_first_line(response) or 'no reason given'}"
            )
        try:
            return response.json()
        except ValueError:
            raise AdminError(f"{where} did not answer JSON: is --url the kit's proxy?") from None

    def _send(self, method: str, path: str) -> Response:
        url = self.target.url
        try:
            return self.target.request(method, path)
        except ssl.SSLCertVerificationError as error:
            raise AdminError(
                f"{url}: certificate not trusted ({error.verify_message}): give the CA that signed it with --ca-file"
            ) from None
        except ssl.SSLError as error:
            raise AdminError(f"{url}: TLS handshake failed ({error.reason or error})") from None
        except ConnectionRefusedError:
            raise AdminError(f"cannot reach {url}: connection refused") from None
        except TimeoutError:
            raise AdminError(f"cannot reach {url}: no answer within {self.target.timeout:g} s") from None
        except OSError as error:  # name resolution, network unreachable...
            raise AdminError(f"cannot reach {url}: {error.strerror or error}") from None

    def unknown_worker(self, name: str) -> AdminError:
        known = ", ".join(sorted(self.get("workers"))) or "none"
        return AdminError(f"unknown worker {name!r} (workers Flower knows: {known})")

    def worker_name(self, name: str) -> str:
        """A worker's node name as given; a pool's name stands for that pool's one online worker
        (compose names workers <pool>@<container id>)."""
        if "@" in name:
            return name
        online = sorted(w for w, alive in self.get("workers", {"status": 1}).items() if alive)
        matches = [w for w in online if w.split("@", 1)[0] == name]
        if len(matches) > 1:
            raise AdminError(f"pool {name!r} has {len(matches)} workers online ({', '.join(matches)}): name one")
        if not matches:
            raise AdminError(f"unknown worker {name!r}: no such worker or pool online ({', '.join(online) or 'none'})")
        return matches[0]

    def worker_info(self, name: str) -> dict:
        """The worker's own answer now (inspect: stats, queues...), not what Flower last heard."""
        try:
            info = self.get("workers", {"refresh": 1, "workername": name}).get(name) or {}
        except NotFound:
            raise self.unknown_worker(name) from None
        if "active_queues" not in info or "stats" not in info:
            raise AdminError(f"worker {name!r} did not answer: is it online?")
        return info


def _first_line(response: Response) -> str:
    text = response.body.decode(errors="replace").strip()
    return text.splitlines()[0][:300] if text else ""


def _path(name: str) -> str:
    return quote(name, safe="@")


# ---- the commands through Flower ----------------------------------------------------------------


def workers(flower: Flower, _: argparse.Namespace) -> Result:
    info = flower.get("workers", {"refresh": 1})  # stats and queues as each worker answers now
    online = flower.get("workers", {"status": 1})  # from events: a stopped worker says goodbye
    # Running tasks from Flower's events: inspecting each worker's `active` costs a second apiece.
    running = flower.get("tasks", {"state": "STARTED"})
    active = Counter(task.get("worker") for task in running.values())
    rows = []
    for name in sorted(set(info) | set(online)):
        details = info.get(name) or {}
        pool = (details.get("stats") or {}).get("pool") or {}
        pids = pool.get("processes") or []
        rows.append(
            {
                "name": name,
                "pool": name.split("@", 1)[0],
                "online": bool(online.get(name)),
                "queues": sorted(q["name"] for q in details.get("active_queues") or []),
                "processes": len(pids),
                "pids": pids,
                "concurrency": pool.get("max-concurrency"),
                "active": active.get(name, 0),
            }
        )
    lines = [
        f"{r['name']}  pool={r['pool']}  {'online' if r['online'] else 'offline'}  "
        f"queues={','.join(r['queues']) or '-'}  processes={r['processes']}  concurrency={r['concurrency'] or '?'}  "
        f"active={r['active']}"
        for r in rows
    ]
    return rows, lines or ["no worker known to Flower"]


def queues(flower: Flower, _: argparse.Namespace) -> Result:
    # Flower counts every priority sub-queue of each queue its workers consume.
    found = sorted(flower.get("queues/length")["active_queues"], key=lambda q: q["name"])
    lines = [f"{q['name']}  {q['messages']} waiting" for q in found]
    return found, lines or ["no queue: Flower knows no worker consuming one"]


def revoke(flower: Flower, args: argparse.Namespace) -> Result:
    if bool(args.ids) == bool(args.task):
        raise UsageError("give task ids, or --task NAME --state STATE (not both)")
    if bool(args.task) != bool(args.state):
        raise UsageError("--task and --state go together")
    if args.signal and not args.terminate:
        raise UsageError(f"--signal {args.signal} needs --terminate")
    if args.ids:
        states = {}
        for task_id in dict.fromkeys(args.ids):  # every id checked before any is revoked
            try:
                states[task_id] = flower.get(f"task/info/{_path(task_id)}").get("state")
            except NotFound:
                raise AdminError(f"unknown task {task_id!r}: Flower has no record of it") from None
    else:
        if args.task not in flower.get("task/types")["task-types"]:
            raise AdminError(f"unknown task name {args.task!r}: Flower has seen no task of that name")
        found = flower.get("tasks", {"taskname": args.task, "state": args.state})
        states = {task_id: task.get("state") for task_id, task in sorted(found.items())}
    sig = args.signal or "SIGTERM"
    query = {"terminate": "true", "signal": sig} if args.terminate else None
    for task_id in states:
        flower.post(f"task/revoke/{_path(task_id)}", query)
    how = f" and terminated them if running ({sig})" if args.terminate else ""
    if states:
        line = f"revoked {len(states)} task(s){how}: {', '.join(states)}"
    else:
        line = f"nothing to revoke: no {args.task} task is {args.state}"
    data = {
        "revoked": list(states),
        "states": states,
        "terminate": args.terminate,
        "signal": sig if args.terminate else None,
    }
    return data, [line]


def shutdown(flower: Flower, args: argparse.Namespace) -> Result:
    worker = flower.worker_name(args.worker)
    try:
        answer = flower.post(f"worker/shutdown/{_path(worker)}")
    except NotFound:
        raise flower.unknown_worker(worker) from None
    line = f"{worker}: warm shutdown sent (running tasks finish; its service manager starts it again)"
    return {"worker": worker, "message": answer.get("message")}, [line]


def pool(flower: Flower, args: argparse.Namespace) -> Result:
    if args.action == "restart" and args.n is not None:
        raise UsageError(f"pool restart takes no N, got {args.n}")
    n = 1 if args.n is None else args.n
    worker = flower.worker_name(args.worker)
    if args.action == "shrink":
        # Celery's pool stops idle processes one by one and fails only when none is left idle: a
        # shrink by as many as it runs would leave a worker that takes tasks and runs none.
        running = len((flower.worker_info(worker)["stats"].get("pool") or {}).get("processes") or [])
        if n >= running:
            raise UsageError(f"N must be below the {running} process(es) {worker} runs, got {n}")
    try:
        answer = flower.post(
            f"worker/pool/{args.action}/{_path(worker)}", None if args.action == "restart" else {"n": n}
        )
    except NotFound:
        raise flower.unknown_worker(worker) from None
    done = {"restart": "pool restart started", "grow": f"pool grows by {n}", "shrink": f"pool shrinks by {n}"}
    data = {"worker": worker, "action": args.action, "n": None if args.action == "restart" else n}
    return {**data, "message": answer.get("message")}, [f"{worker}: {done[args.action]}"]


def consumer(flower: Flower, args: argparse.Namespace) -> Result:
    worker = flower.worker_name(args.worker)
    consumed = sorted(q["name"] for q in flower.worker_info(worker)["active_queues"])
    if args.action == "cancel" and args.queue not in consumed:
        raise AdminError(f"{worker} does not consume {args.queue!r} (it consumes: {', '.join(consumed) or 'nothing'})")
    answer = flower.post(f"worker/queue/{args.action}-consumer/{_path(worker)}", {"queue": args.queue})
    message = answer.get("message") or ""
    data = {"worker": worker, "action": args.action, "queue": args.queue, "message": message}
    return data, [f"{worker}: {message}"]


# ---- purge: the broker itself ----------------------------------------------------------------------


def purge(args: argparse.Namespace) -> Result:
    if args.confirm != args.queue:
        raise UsageError(f"--confirm must repeat the queue name exactly ({args.queue!r}), got {args.confirm!r}")
    from celerykit.monitoring import Watch  # the deployment's pools, as the exporter reads them

    env = Env.current()
    known = Watch.from_env(env).queues
    if args.queue not in known:
        raise AdminError(f"unknown queue {args.queue!r}: no pool of CELERYKIT_POOLS consumes it ({', '.join(known)})")
    removed = _purge_waiting(env, args.queue)
    line = f"purged {removed} waiting message(s) from {args.queue}; reserved ones stay with their workers"
    return {"queue": args.queue, "purged": removed}, [line]


def _purge_waiting(env: Env, queue: str) -> int:
    """kombu's purge: every priority sub-queue emptied in one transaction, and how many it held."""
    from celery import Celery
    from kombu.exceptions import OperationalError

    from celerykit.celeryconfig import kit_settings

    app = Celery("celerykit-admin", set_as_current=False)
    app.conf.update(kit_settings(env))  # the broker and transport options every service uses
    with app.connection_for_write() as connection:
        errors = (OperationalError, OSError, *connection.connection_errors, *connection.channel_errors)
        try:
            connection.ensure_connection(max_retries=1)  # a command, not a service: fail, do not wait
            return int(connection.default_channel.queue_purge(queue))
        except errors as error:
            where = f"{connection.hostname}:{connection.port}"
            raise AdminError(f"cannot reach the broker at {where}: {error}") from None


# ---- arguments ------------------------------------------------------------------------------------


def _signal(text: str) -> str:
    name = text.upper() if text.upper().startswith("SIG") else "SIG" + text.upper()
    if name not in signal.Signals.__members__:
        raise argparse.ArgumentTypeError(f"must be a signal name such as SIGTERM or SIGKILL, got {text!r}")
    return name


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of processes, at least 1, got {text!r}")
    return int(text)


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    env = Env.current()
    proxy = argparse.ArgumentParser(add_help=False)
    proxy.add_argument(
        "--url",
        default=env.get(URL_VARIABLE, DEFAULT_URL),
        help=f"the proxy, https://HOST[:PORT][/flower] ({URL_VARIABLE}; default {DEFAULT_URL})",
    )
    proxy.add_argument(
        "--user",
        default=env.get("CELERYKIT_FLOWER_USER", defaults.FLOWER_USER),
        help="Flower's user (default %(default)s)",
    )
    proxy.add_argument(
        "--password-file",
        default=env.get(PASSWORD_VARIABLE),
        help=f"file holding Flower's password ({PASSWORD_VARIABLE}); never on the command line",
    )
    proxy.add_argument(
        "--ca-file", default=env.get(CA_VARIABLE), help=f"CA that signed the proxy's certificate ({CA_VARIABLE})"
    )
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print the result as JSON")
    common = [proxy, output]

    commands = parser.add_subparsers(dest="admin_command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    commands.add_parser("workers", parents=common, help="each worker: pool, online, queues, processes, active tasks")
    commands.add_parser("queues", parents=common, help="each queue's waiting messages (every priority)")
    revoke_parser = commands.add_parser(
        "revoke",
        parents=common,
        help="revoke tasks by id, or every task of a name in a state",
        description="Revoke tasks: by id, or every task named --task in --state (as Flower lists them). "
        "A revoked task that waits is skipped; one that runs stops only with --terminate.",
    )
    revoke_parser.add_argument("ids", nargs="*", metavar="ID", help="task ids (each must be known to Flower)")
    revoke_parser.add_argument("--task", metavar="NAME", help="every task of this name...")
    revoke_parser.add_argument("--state", type=str.upper, choices=REVOCABLE, help="...in this state")
    revoke_parser.add_argument("--terminate", action="store_true", help="also stop the task if it runs")
    revoke_parser.add_argument("--signal", type=_signal, help="the signal --terminate sends (default SIGTERM)")
    shutdown_parser = commands.add_parser(
        "shutdown", parents=common, help="warm shutdown of a worker (its service manager starts it again)"
    )
    shutdown_parser.add_argument("worker", metavar="WORKER", help=WORKER_HELP)
    pool_parser = commands.add_parser(
        "pool",
        parents=common,
        help="restart a worker's pool processes, or grow or shrink the pool by N (default 1)",
        description="restart: replace every process of the worker's pool, which Celery does to each process "
        "after the next task it runs (running tasks finish; the worker keeps running and consuming); "
        "grow/shrink: add or remove N processes, until the worker restarts.",
    )
    pool_parser.add_argument("action", choices=("restart", "grow", "shrink"))
    pool_parser.add_argument("worker", metavar="WORKER", help=WORKER_HELP)
    pool_parser.add_argument("n", nargs="?", type=_count, metavar="N", help="processes to add or remove (default 1)")
    consumer_parser = commands.add_parser(
        "consumer", parents=common, help="make a worker start (add) or stop (cancel) consuming a queue"
    )
    consumer_parser.add_argument("action", choices=("add", "cancel"))
    consumer_parser.add_argument("worker", metavar="WORKER", help=WORKER_HELP)
    consumer_parser.add_argument("queue", metavar="QUEUE")
    purge_parser = commands.add_parser(
        "purge",
        parents=[output],
        help="remove the messages waiting in a queue (talks to Redis: run it on a kit host)",
        description=f"Remove every message waiting in QUEUE, at every priority, and print how many. "
        f"{RESERVED_NOTE} It talks to the broker with the services' settings (CELERYKIT_REDIS_*, "
        "CELERYKIT_POOLS), so run it where Redis is reachable, and refuses a queue no pool consumes.",
    )
    purge_parser.add_argument("queue", metavar="QUEUE")
    purge_parser.add_argument("--confirm", required=True, metavar="QUEUE", help="the queue's name again")
    return parser


# ---- running them ---------------------------------------------------------------------------------


def connect(args: argparse.Namespace) -> Flower:
    try:
        parts = urlsplit(args.url)
        valid = parts.scheme == "https" and bool(parts.hostname) and not parts.query and parts.port != 0
    except ValueError:  # a bad port or IPv6 address
        valid = False
    if not valid:
        raise UsageError(f"--url ({URL_VARIABLE}) must be the proxy's https://HOST[:PORT][/PATH], got {args.url!r}")
    name = f"--password-file ({PASSWORD_VARIABLE})"
    if not args.password_file:
        raise UsageError(f"{name} must be given: passwords are never taken as arguments")
    try:
        password = Path(args.password_file).read_text().strip()
    except OSError:
        raise UsageError(f"{name} must name a file this user may read, got {args.password_file!r}") from None
    if not password:
        raise UsageError(f"{name} must hold the password, got the empty file {args.password_file!r}")
    if args.ca_file:
        try:
            ssl.create_default_context(cafile=args.ca_file)
        except (OSError, ssl.SSLError):  # OSError: missing or unreadable; SSLError: not PEM
            message = f"--ca-file ({CA_VARIABLE}) must name a readable PEM certificate file, got {args.ca_file!r}"
            raise UsageError(message) from None
    prefix = parts.path.strip("/") or defaults.FLOWER_URL_PREFIX
    return Flower(
        Target(
            url=f"https://{parts.netloc}",
            user=args.user,
            password=password,
            flower_path=f"/{prefix}/",
            ca_file=args.ca_file,
        )
    )


COMMANDS: dict[str, Callable[[Flower, argparse.Namespace], Result]] = {
    "workers": workers,
    "queues": queues,
    "revoke": revoke,
    "shutdown": shutdown,
    "pool": pool,
    "consumer": consumer,
}


def main(args: argparse.Namespace) -> int:
    try:
        if args.admin_command == "purge":
            data, lines = purge(args)
        else:
            data, lines = COMMANDS[args.admin_command](connect(args), args)
    except AdminError as error:
        print(f"celerykit admin {args.admin_command}: {error}", file=sys.stderr)
        return 2 if isinstance(error, UsageError) else 1
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else "\n".join(lines))
    return 0
