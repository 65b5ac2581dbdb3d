"""A benchmark round measures the kit, not the machine's other work: rounds run alone.

Before each round the machine must be quiet: over a few seconds, CPU used by anything that is not this
benchmark stays below MAX_FOREIGN_SHARE of the machine. During the round the same is counted; a round
in which other work took more than that is measured again (at most MAX_ATTEMPTS times, then kept and
marked). "Not this benchmark" is:
  - containers of other compose projects or none (their cgroup's CPU time: test suites, Molecule hosts),
  - host processes outside every container, other than Docker's daemons and this run's own processes,
  - time the hypervisor gave to other guests (steal).
The bench project's own containers may be replaced during a round (each variant restarts its pools),
which is why their CPU is never what is counted. Each round records its load average before and
after, the other work's share and how many attempts it took.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_FOREIGN_SHARE = 0.05  # of all cores: a tenth of one core on this 2-core machine
MAX_ATTEMPTS = 3
QUIET_SAMPLE_S = 5.0
QUIET_WAIT_S = 600.0
DOCKER_DAEMONS = frozenset(("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "docker-proxy"))
TICK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


def _cgroup_cpu_s(container: str) -> float:
    for path, scale in (
        (Path(f"/sys/fs/cgroup/cpuacct/docker/{container}/cpuacct.usage"), 1e9),  # cgroup v1 (ns)
        (Path(f"/sys/fs/cgroup/system.slice/docker-{container}.scope/cpu.stat"), 1e6),  # v2 (usage_usec)
    ):
        try:
            text = path.read_text()
        except OSError:
            continue
        value = text.split()[0] if scale == 1e9 else text.split("usage_usec", 1)[1].split()[0]
        return int(value) / scale
    return 0.0


def _other_containers(project: str) -> dict[str, float]:
    listed = subprocess.run(
        ["docker", "ps", "--no-trunc", "--format", '{{.ID}} {{.Label "com.docker.compose.project"}}'],
        capture_output=True, text=True, timeout=60, check=False,
    ).stdout  # fmt: skip
    ids = [line.split()[0] for line in listed.splitlines() if line.strip() and line.split()[1:] != [project]]
    return {container: _cgroup_cpu_s(container) for container in ids}


def _own_processes() -> set[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents.setdefault(int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]), []).append(
                    int(entry.name)
                )
            except OSError:
                continue
    own, todo = set(), [os.getpid()]
    while todo:
        own.add(pid := todo.pop())
        todo += parents.get(pid, [])
    return own


def _host_processes() -> dict[int, float]:
    """CPU seconds (with reaped children) of each host process outside containers that is neither
    a kernel thread, nor one of Docker's daemons, nor this run's own."""
    own, found = _own_processes(), {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in own:
            continue
        try:
            comm, _, rest = (entry / "stat").read_text().partition(") ")
            cgroup = (entry / "cgroup").read_text()
        except OSError:
            continue
        fields = rest.split()
        if comm.split("(", 1)[1] in DOCKER_DAEMONS or "docker" in cgroup or fields[1] in ("0", "2"):
            continue  # Docker's own, inside a container, or a kernel thread (parent kthreadd)
        found[int(entry.name)] = sum(int(value) for value in fields[11:15]) / TICK
    return found


def _steal_s() -> float:
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(cpu[8]) / TICK if len(cpu) > 8 else 0.0


class Meter:
    """CPU seconds taken by other work since it was started."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.containers = _other_containers(project)
        self.processes = _host_processes()
        self.steal = _steal_s()
        self.started = time.monotonic()

    def share(self) -> float:
        """Other work's CPU time as a share of the machine's (all cores) over the meter's window."""
        containers = _other_containers(self.project)
        # A container that started in the window counts whole; one that ended is gone from both.
        other = sum(cpu - self.containers.get(cid, 0.0) for cid, cpu in containers.items())
        other += sum(cpu - self.processes.get(pid, 0.0) for pid, cpu in _host_processes().items())
        other += _steal_s() - self.steal
        return max(other, 0.0) / ((time.monotonic() - self.started) * CORES)


def wait_until_quiet(project: str) -> tuple[float, float]:
    """Wait until a sample shows the machine quiet; (the last sample's share, seconds waited)."""
    started = time.monotonic()
    while True:
        meter = Meter(project)
        time.sleep(QUIET_SAMPLE_S)
        share = meter.share()
        if share < MAX_FOREIGN_SHARE or time.monotonic() - started > QUIET_WAIT_S:
            return share, round(time.monotonic() - started, 1)
        print(f"  waiting for a quiet machine: other work {share:.0%} of the CPU", flush=True)


def rounds(project: str, count: int, measure: Callable[[], dict[str, Any]], label: str) -> list[dict[str, Any]]:
    """`count` rounds of `measure()`, each on a quiet machine; each round's figures get a "machine"
    entry: load average before and after, other work's share before and during, attempts."""
    done = []
    for index in range(count):
        for attempt in range(1, MAX_ATTEMPTS + 1):
            before, waited = wait_until_quiet(project)
            load_before, meter = os.getloadavg(), Meter(project)
            figures = measure()
            during = meter.share()
            alone = during < MAX_FOREIGN_SHARE
            if alone or attempt == MAX_ATTEMPTS:
                break
            print(f"  {label} round {index + 1}: other work took {during:.0%} of the CPU, measuring again", flush=True)
        figures["machine"] = {
            "load_before": [round(value, 2) for value in load_before],
            "load_after": [round(value, 2) for value in os.getloadavg()],
            "other_share_before": round(before, 3),
            "other_share_during": round(during, 3),
            "waited_s": waited,
            "attempts": attempt,
            "alone": alone,
        }
        done.append(figures)
    return done


def summary(rounds_done: list[dict[str, Any]]) -> dict[str, Any]:
    """What the results table says of the rounds: load averages and other work seen."""
    machine = [r["machine"] for r in rounds_done]
    loads = [value for m in machine for value in (m["load_before"][0], m["load_after"][0])]
    return {
        "rounds": len(machine),
        "load_1min": [min(loads, default=0.0), max(loads, default=0.0)],
        "other_share_max": max((m["other_share_during"] for m in machine), default=0.0),
        "repeated": sum(m["attempts"] - 1 for m in machine),
        "not_alone": sum(not m["alone"] for m in machine),
    }


def describe(summary_: dict[str, Any]) -> str:
    """One line under a table: how alone its rounds were."""
    low, high = summary_["load_1min"]
    line = (
        f"{summary_['rounds']} rounds; 1-min load average {low:.2f}-{high:.2f} (the benchmark's own included); "
        f"other work at most {summary_['other_share_max']:.0%} of the CPU during a round"
    )
    if summary_["repeated"]:
        line += f"; {summary_['repeated']} round(s) measured again because other work ran"
    if summary_["not_alone"]:
        line += f"; **{summary_['not_alone']} round(s) never ran alone** (kept, read with care)"
    return line + "."
