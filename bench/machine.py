"""The machine and versions a run happened on, for the results table."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from bench.stack import Stack


def _run(*command: str) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return "?"
    return (result.stdout or result.stderr).strip().splitlines()[0] if (result.stdout or result.stderr) else "?"


def _os_name() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system()


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def describe(stack: Stack) -> dict:
    mem_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    versions = stack.client("versions")
    redis = stack.compose("exec", "-T", "redis", "redis-server", "--version", check=False).stdout.strip()
    nginx = stack.compose("exec", "-T", "nginx", "nginx", "-v", check=False).stderr.strip()
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "os": _os_name(),
        "kernel": platform.release(),
        "docker": _run("docker", "version", "--format", "{{.Server.Version}}"),
        "compose": _run("docker", "compose", "version", "--short"),
        "wrk": _run("wrk", "--version").split(" Copyright")[0],
        "redis_server": redis.split(" v=")[1].split()[0] if " v=" in redis else redis,
        "nginx": nginx.rsplit("/", 1)[-1] if "/" in nginx else nginx,
        **versions,
    }
