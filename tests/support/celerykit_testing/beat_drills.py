"""Beat drills, written once for both suites, on the `beat_deployment` fixture: a deployment whose
heartbeat interval is long enough to tell a duplicate run from a late one (the compose tests use
their fault stack with a 20 s heartbeat; the Molecule verifier its converged hosts).
"""

from __future__ import annotations

import time

import pytest

from celerykit_testing import drills
from celerykit_testing.deployment import BEAT, Deployment

__all__ = ["test_beat_restarted_or_killed_runs_each_periodic_task_once"]


@pytest.mark.parametrize("how", ["graceful restart", "sigkill"])
def test_beat_restarted_or_killed_runs_each_periodic_task_once(beat_deployment: Deployment, how: str):
    """Fault 5: right after Beat sent the heartbeat, restart it (TERM) or SIGKILL its process (the
    supervisor restarts it). The next heartbeat comes a full interval later (no second run for
    the same tick), and one Beat with one scheduler process runs in the whole deployment."""
    deployment = beat_deployment
    target, interval = deployment.target, deployment.heartbeat_seconds()
    restarts = deployment.restarts(BEAT)
    before = drills.next_heartbeat(target, after=time.time(), timeout=3 * interval)
    if how == "sigkill":
        deployment.kill_beat()
    else:
        deployment.restart_beat()
    after = drills.next_heartbeat(target, after=before, timeout=3 * interval)
    deployment.wait_running(BEAT)
    schedulers = deployment.beat_schedulers()
    gap = after - before
    drills.record(
        f"fault5-beat-{how.replace(' ', '-')}",
        deployment=deployment.kind,
        interval=interval,
        gap_s=round(gap, 1),
        schedulers=sum(schedulers.values()),
    )
    assert gap > 0.75 * interval, f"heartbeat ran twice: {gap:.1f}s apart"
    assert list(schedulers.values()) == [1], schedulers  # one Beat, one scheduler process in it
    if how == "sigkill":
        assert deployment.restarts(BEAT) == restarts + 1
