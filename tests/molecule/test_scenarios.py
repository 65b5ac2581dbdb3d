"""Run each Molecule scenario's test sequence (converge, idempotence, verify...) on systemd containers.

Each action runs as its own `molecule <action>` so its duration is measured; the sequence is the
scenario's own `test_sequence`. The instances are destroyed whatever happens. Durations are recorded
with the drills' figures (tests/conftest.py prints them at the end of the run).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from celerykit_testing import drills

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


# An action's limit: the default scenario's verify (drills, soak, reconfigured converges) took 915 s
# alone with the other lanes, but more than 1,800 s when all three lanes ran their day-2, upgrade and
# admin suites together on two cores: a limit against a hang, not a speed test.
ACTION_TIMEOUT = 3600


def molecule(action: str, scenario: str, timeout: float = ACTION_TIMEOUT) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LANG="C.UTF-8", PY_COLORS="0", ANSIBLE_FORCE_COLOR="0", NO_COLOR="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # molecule's own tools
    return subprocess.run(
        [sys.executable, "-m", "molecule", action, "--scenario-name", scenario],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.molecule
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_passes_its_test_sequence(scenario: str):
    config = yaml.safe_load((ROOT / "molecule" / scenario / "molecule.yml").read_text())
    sequence = config["scenario"]["test_sequence"]
    timings: dict[str, float] = {}
    destroyed = False
    try:
        for action in sequence:
            start = time.monotonic()
            result = molecule(action, scenario)
            timings[action] = timings.get(action, 0.0) + time.monotonic() - start
            assert result.returncode == 0, f"molecule {action} failed:\n{(result.stdout + result.stderr)[-8000:]}"
            destroyed = action == "destroy"
    finally:
        if not destroyed:  # a failed or interrupted sequence leaves its instances behind
            molecule("destroy", scenario)
        figures = {action: round(seconds) for action, seconds in timings.items()}
        drills.record("molecule-timings", scenario=scenario, **figures, total=sum(figures.values()))
