"""Faults injected into the systemd deployment, each counted task by task. The drills are written
once in celerykit_testing (fault_drills, beat_drills), shared with the compose tests, and run here
on the `deployment` and `beat_deployment` fixtures (../conftest.py). Every drill leaves the hosts
as it found them: what was killed runs again.

The default scenario runs them (its host runs every unit the kit installs, as many hosts do); the
multinode scenario drills what only many hosts have: the day-2 playbooks and the Sentinel failover.

Faults that need other settings (a short visibility timeout, a small retry budget) are in
../reconfigure, run by the reconfigure scenario (an all-in-one host of its own).
"""

from celerykit_testing.beat_drills import *  # noqa: F403 - the drills, collected as this module's tests
from celerykit_testing.fault_drills import *  # noqa: F403
