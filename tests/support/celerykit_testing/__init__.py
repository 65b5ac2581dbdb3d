"""Test support shared by the compose tests (tests/stack) and the Molecule verifier (molecule/shared).

- `drills`: send counted tasks through Flower, settle them, record the figures;
- `deployment`: what a fault drill needs from a deployment (the `Deployment` protocol);
- `compose` and `systemd`: that protocol over `docker compose` and over testinfra hosts;
- `soak`: the chaos soak (many faults, some at once, under a stream of tasks), run by
  `reconfigured_drills`;
- `fault_drills`, `beat_drills`, `reconfigured_drills`: the drills themselves, each one test
  function that both suites import (`from celerykit_testing.fault_drills import *`) and run on
  the `deployment`, `beat_deployment` or `reconfigured_deployment` fixture their conftests give.

pyproject.toml's `pythonpath` puts tests/support on sys.path for every pytest run rooted at the
repository (Molecule's verifier included).
"""

import pytest

# The drills' asserts are pytest's: rewritten for detailed failure messages, as in a test module.
pytest.register_assert_rewrite(
    *(f"{__name__}.{module}" for module in ("drills", "beat_drills", "fault_drills", "reconfigured_drills", "soak"))
)
