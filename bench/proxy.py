"""Benchmark 4, proxy overhead: the same Flower API call through nginx+TLS and direct, same client, same run.

The call is /flower/api/task/info/<id> for a stored task (a dictionary lookup in Flower), so what
differs between the two paths is the proxy and TLS. wrk keeps its connections open, like a dashboard
or a client library with a session would. One connection shows the added latency per request; four
show what the single-threaded Flower serves when the proxy queues for it. "Direct" is Flower's port
published on 127.0.0.1 by bench/compose.bench.yaml (both paths pass Docker's port forwarding once).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request

from bench import wrk
from bench.sizes import Sizes
from bench.stack import Stack, StackError
from bench.stats import median, ratio

CONNECTIONS = (1, 4)
FIGURES = ("rps", "p50_ms", "p95_ms", "p99_ms")


def _task_id(stack: Stack) -> str:
    request = urllib.request.Request(stack.direct_url() + "/flower/api/tasks?limit=1")  # noqa: S310
    token = base64.b64encode(f"admin:{stack.flower_password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback only
        tasks = json.loads(response.read())
    if not tasks:
        raise StackError("Flower stores no task to ask about")
    return next(iter(tasks))


def run(stack: Stack, sizes: Sizes) -> dict:
    """Runs right after `up`, while Flower holds a handful of tasks: its periodic state save then takes
    milliseconds instead of stalling every request for the length of a 10,000-task dump."""
    if not wrk.available():
        raise StackError("wrk is not installed (apt-get install -y wrk)")
    stack.client("ready", "--timeout", "120", timeout=180)  # a few tasks for Flower to know
    time.sleep(3)
    path = f"/flower/api/task/info/{_task_id(stack)}"
    urls = {"direct": stack.direct_url() + path, "nginx": stack.https_url + path}
    rounds = []
    for index in range(sizes.repeats):
        order = ("direct", "nginx") if index % 2 == 0 else ("nginx", "direct")
        figures = {
            f"{name}_c{conns}": wrk.run(urls[name], "admin", stack.flower_password, sizes.wrk_seconds, conns)
            for conns in CONNECTIONS
            for name in order
        }
        rounds.append(figures)
        print(
            "  proxy round: "
            + ", ".join(f"{key} {f['rps']:.0f} rps p95 {f['p95_ms']:.1f} ms" for key, f in sorted(figures.items())),
            flush=True,
        )
    result: dict = {"call": "GET /flower/api/task/info/<id>", "connections": list(CONNECTIONS), "rounds": rounds}
    for key in rounds[0]:
        result[key] = {k: median([r[key][k] for r in rounds]) for k in FIGURES}
        result[key]["errors"] = sum(r[key]["errors"] + r[key]["non_2xx"] for r in rounds)
    for conns in CONNECTIONS:
        nginx, direct = f"nginx_c{conns}", f"direct_c{conns}"
        result[f"nginx_over_direct_c{conns}"] = {
            "rps": median([ratio(r[nginx]["rps"], r[direct]["rps"]) for r in rounds]),
            "p50": median([ratio(r[nginx]["p50_ms"], r[direct]["p50_ms"]) for r in rounds]),
            "p95": median([ratio(r[nginx]["p95_ms"], r[direct]["p95_ms"]) for r in rounds]),
        }
    return result


def render(result: dict) -> list[str]:
    lines = [
        f"| {result['call']} | connections | direct to Flower | through nginx + TLS | nginx ÷ direct |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for conns in result["connections"]:
        direct, nginx = result[f"direct_c{conns}"], result[f"nginx_c{conns}"]
        ratios = result[f"nginx_over_direct_c{conns}"]
        lines += [
            f"| requests/s | {conns} | {direct['rps']:.0f} | {nginx['rps']:.0f} | {ratios['rps']:.2f} |",
            f"| p50 | {conns} | {direct['p50_ms']:.2f} ms | {nginx['p50_ms']:.2f} ms | {ratios['p50']:.2f} |",
            f"| p95 | {conns} | {direct['p95_ms']:.2f} ms | {nginx['p95_ms']:.2f} ms | {ratios['p95']:.2f} |",
            f"| errors or non-2xx | {conns} | {direct['errors']} | {nginx['errors']} | |",
        ]
    return lines
