"""Run wrk against a URL on loopback with Flower's credentials and return its figures."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).parent / "wrk" / "report.lua"


def available() -> bool:
    return shutil.which("wrk") is not None


def run(url: str, user: str, password: str, seconds: int, connections: int = 1, threads: int = 1) -> dict:
    if not url.startswith(("http://127.0.0.1:", "https://127.0.0.1:")):
        raise ValueError(f"benchmarks only load loopback addresses, not {url}")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(SCRIPT), url],
        env={**os.environ, "BENCH_AUTH": f"Basic {token}"},
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("BENCH "))
    raw = json.loads(line.removeprefix("BENCH "))
    seconds_run = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "rps": round(raw["requests"] / seconds_run, 1) if seconds_run else 0.0,
        "errors": raw["errors"],
        "non_2xx": raw["non_2xx"],
        "p50_ms": raw["p50_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
    }
