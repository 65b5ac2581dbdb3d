"""How big each benchmark is: the sizes the issue names, and a quick mode for development."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    name: str
    repeats: int  # rounds of each kit/baseline pair; figures are medians over rounds
    backlog: int  # one-second tasks waiting in low_priority during the priority probes
    probes: int  # no-op probes sent to high_priority, one every `probe_interval` seconds
    probe_interval: float
    throughput_tasks: int  # no-op tasks per variant
    throughput_repeats: int  # rounds of all throughput variants (each round takes minutes at full size)
    flower_checkpoints: tuple[int, ...]  # task counts (4 events each) at which Flower's RSS is read
    wrk_seconds: int
    api_seconds: int  # per /api/tasks measurement: above Flower's 15-s state-save interval, so every window holds one
    cold_build: bool
    monitoring_tasks: int = 3000  # no-op tasks per throughput run, monitoring on and off
    monitoring_repeats: int = 6  # rounds: half start with monitoring on, half with it off
    scrape_backlog: int = 100000  # tasks waiting while the scrape durations are read
    # Scaling: worker containers x processes each, smallest first (bench/scaling.py says why these).
    scaling_points: tuple[tuple[int, int], ...] = ((2, 2), (4, 4), (8, 4))
    scaling_repeats: int = 3  # rounds of all points
    scaling_idle_s: int = 12  # CPU is read over this window, idle and under the stream
    scaling_stream_rate: int = 20  # no-op tasks a second in the steady stream, the same at every size
    throughput_short_tasks: int = 1500  # 10 ms tasks per variant
    throughput_cap_s: int = 240  # a variant stops here; its rate is then that of what finished
    tls_repeats: int = 3  # rounds of plain and TLS (each switches the whole stack twice)
    recycling_tasks: int = 5100  # the kit: 204 replacements a round (bench/recycling.py)
    recycling_reference_tasks: int = 1000  # Celery as it is: 40, each of them seconds long


FULL = Sizes(
    name="full",
    repeats=5,
    backlog=5000,
    probes=500,
    probe_interval=0.02,
    throughput_tasks=5000,
    throughput_repeats=5,
    flower_checkpoints=(10000, 50000, 100000),
    wrk_seconds=8,
    api_seconds=16,
    cold_build=True,
)
QUICK = Sizes(
    name="quick",
    repeats=1,
    backlog=300,
    probes=50,
    probe_interval=0.02,
    throughput_tasks=1000,
    throughput_repeats=1,
    throughput_short_tasks=200,
    throughput_cap_s=120,
    flower_checkpoints=(1000, 3000, 5000),
    wrk_seconds=3,
    api_seconds=3,
    cold_build=False,
    monitoring_tasks=500,
    monitoring_repeats=2,
    scrape_backlog=10000,
    scaling_points=((1, 1), (2, 2)),
    scaling_repeats=1,
    scaling_idle_s=5,
    scaling_stream_rate=10,
    recycling_tasks=1000,
    recycling_reference_tasks=250,
    tls_repeats=1,
)
