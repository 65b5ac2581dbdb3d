"""The whole test session: how the suites share the machine, and the figures they print at the end.

`scripts/test` runs pytest with `-n 3 --dist loadgroup` (pytest-xdist): the compose suite and
each Molecule scenario are a group that one worker runs in order (each brings up containers of
its own under its own names), so the three run side by side; the other tests go wherever a worker
is free.

Drills, checks and Molecule's action timings append JSON lines to the file named by
CELERYKIT_DRILL_REPORT (made here, before the workers start, so that they and the Molecule
verifiers they start inherit it); the summary prints them after the run.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or os.environ.get("CELERYKIT_DRILL_REPORT"):
        return
    handle, path = tempfile.mkstemp(prefix="celerykit-figures-", suffix=".jsonl")
    os.close(handle)
    os.environ["CELERYKIT_DRILL_REPORT"] = path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(item.fspath)
        if TESTS / "stack" in path.parents:
            item.add_marker(pytest.mark.stack)
            item.add_marker(pytest.mark.xdist_group("stack"))
        elif item.get_closest_marker("molecule"):
            item.add_marker(pytest.mark.xdist_group(f"molecule-{item.callspec.params['scenario']}"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    path = Path(os.environ.get("CELERYKIT_DRILL_REPORT", ""))
    if not path.is_file() or not path.stat().st_size:
        return
    terminalreporter.section("measured figures: drills, attack checks, Molecule timings")
    for line in path.read_text().splitlines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"(JSON lines in {path})")
