"""Faults injected into the running stack (the session's), each counted task by task.

The drills are written once in celerykit_testing.fault_drills and run here on the `deployment`
fixture (conftest); the Molecule verifier runs the same functions on systemd hosts. Faults that
need other settings (a short visibility timeout, a small retry budget, a longer heartbeat) run
in test_fault_stack.py on a stack of their own. Figures go to the drill report (see conftest).
"""

import pytest
from celerykit_testing.fault_drills import *  # noqa: F403 - the drills, collected as this module's tests

pytestmark = pytest.mark.faults
