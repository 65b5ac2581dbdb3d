"""The scaling benchmark's helper inside the containers (bench/scaling.py drives it).

    python -m scalingclient nodes --names a@x,b@y       # bench-client: until every node answers a ping
    python -m scalingclient stream --rate 20 --seconds 15   # bench-client: a steady stream of no-op tasks
    python -m scalingclient sockets                     # a worker container: Redis connections per process

Each prints one JSON object on its last line, like benchclient, whose helpers it reuses.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

REDIS_PORT = 6379
ESTABLISHED = "01"  # the `st` column of /proc/net/tcp


def cmd_nodes(args: argparse.Namespace) -> dict:
    from benchclient import load_app

    app = load_app("kit")
    wanted = set(args.names.split(","))
    started = time.monotonic()
    answered: set[str] = set()
    while time.monotonic() - started < args.timeout:
        replies = app.control.ping(destination=sorted(wanted), timeout=2.0)
        answered = {name for reply in replies for name in reply}
        if answered >= wanted:
            break
        time.sleep(1)
    return {"ready": answered >= wanted, "missing": sorted(wanted - answered), "seconds": time.monotonic() - started}


def cmd_stream(args: argparse.Namespace) -> dict:
    """`rate` no-op tasks a second for `seconds`, on a fixed schedule, then wait for them to finish."""
    from benchclient import done, load_app, purge, wait_all

    app = load_app("kit")
    ids: list[str] = []
    with app.producer_or_acquire() as producer:
        print(json.dumps({"streaming": True}), flush=True)  # bench/scaling.py starts its CPU window on this
        started = time.monotonic()
        for index in range(int(args.rate * args.seconds)):
            time.sleep(max(0.0, started + index / args.rate - time.monotonic()))
            ids.append(app.send_task("bench.noop", queue=args.queue, producer=producer).id)
    sent_s = time.monotonic() - started
    metas = wait_all(app, ids, args.timeout)
    purge(app, [args.queue])  # what the deadline left behind
    return {"sent": len(ids), "sent_s": round(sent_s, 2), "completed": sum(done(m) for m in metas)}


def _redis_sockets() -> set[int]:
    """Inodes of this network namespace's established TCP connections to Redis's port."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == ESTABLISHED and int(fields[2].rsplit(":", 1)[1], 16) == REDIS_PORT:
                inodes.add(int(fields[9]))
    return inodes


def cmd_sockets(args: argparse.Namespace) -> dict:
    """Redis connections of the worker's main process and of each pool process.

    A descriptor a child inherited and still holds counts once, for the main process."""
    redis = _redis_sockets()
    processes: dict[int, tuple[int, set[int]]] = {}  # pid -> (ppid, its Redis socket inodes)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            links = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        inodes = {int(link[8:-1]) for link in links if link.startswith("socket:[")}
        processes[int(entry.name)] = (ppid, inodes & redis)
    # The worker's main process is the child of the container's init (pid 1); the pool processes are its children.
    mains = [pid for pid, (ppid, _) in processes.items() if ppid == 1]
    main = max(mains, key=lambda pid: sum(1 for ppid, _ in processes.values() if ppid == pid))
    main_inodes = processes[main][1]
    children = sorted(len(inodes - main_inodes) for pid, (ppid, inodes) in processes.items() if ppid == main)
    return {"main": len(main_inodes), "children": children, "container": len(redis)}


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="scalingclient")
    sub = main.add_subparsers(dest="command", required=True)
    sub.add_parser("sockets")
    nodes = sub.add_parser("nodes")
    nodes.add_argument("--names", required=True)
    nodes.add_argument("--timeout", type=float, default=180)
    stream = sub.add_parser("stream")
    stream.add_argument("--queue", default="scaling")
    stream.add_argument("--rate", type=float, default=20)
    stream.add_argument("--seconds", type=float, default=15)
    stream.add_argument("--timeout", type=float, default=120)
    return main


COMMANDS = {"nodes": cmd_nodes, "stream": cmd_stream, "sockets": cmd_sockets}


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    print(json.dumps(COMMANDS[args.command](args)))


if __name__ == "__main__":
    main()
