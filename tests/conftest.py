"""The whole test session: the `stack` marker, and the figures printed at the end of the run.

Drills, checks and Molecule's action timings append JSON lines to the file named by
CELERYKIT_DRILL_REPORT (made here at the start, so that the Molecule verifiers this session starts
inherit it); the summary prints them after the run, with each test module's seconds
(celerykit_testing.timing).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from celerykit_testing.timing import pytest_runtest_logreport, pytest_sessionfinish  # noqa: F401 (hooks)

TESTS = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("CELERYKIT_DRILL_REPORT"):
        return
    handle, path = tempfile.mkstemp(prefix="celerykit-figures-", suffix=".jsonl")
    os.close(handle)
    os.environ["CELERYKIT_DRILL_REPORT"] = path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if TESTS / "stack" in Path(item.fspath).parents:
            item.add_marker(pytest.mark.stack)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    path = Path(os.environ.get("CELERYKIT_DRILL_REPORT", ""))
    if not path.is_file() or not path.stat().st_size:
        return
    terminalreporter.section("measured figures: drills, attack checks, Molecule timings")
    for line in path.read_text().splitlines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"(JSON lines in {path})")
