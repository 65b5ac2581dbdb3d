"""Where a test session's minutes go: the seconds each test module took (setup, call and teardown,
fixtures included), appended to the session's figures as one `module-seconds` line, slowest first.

Both sessions that run the kit's tests import these hooks into their conftest: the repository's
(unit, collection, compose) and Molecule's verifier (testinfra).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

import pytest

_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _seconds[report.nodeid.split("::", 1)[0]] += report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("CELERYKIT_DRILL_REPORT")
    if not path or not _seconds:
        return
    modules = dict(sorted(((module, round(s)) for module, s in _seconds.items()), key=lambda item: -item[1]))
    line = {"drill": "module-seconds", "session": session.config.invocation_params.dir.name, **modules}
    with open(path, "a") as handle:
        handle.write(json.dumps(line) + "\n")
