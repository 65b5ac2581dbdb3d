from __future__ import annotations

import pytest
from test_scenarios import TIMINGS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print each scenario's measured durations per Molecule action."""
    if not TIMINGS:
        return
    terminalreporter.section("molecule timings (seconds)")
    for scenario, actions in TIMINGS.items():
        figures = ", ".join(f"{action} {seconds:.0f}" for action, seconds in actions.items())
        terminalreporter.write_line(f"{scenario}: {figures}; total {sum(actions.values()):.0f}")
