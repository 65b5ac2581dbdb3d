"""Kept for modules that still `import drills` (molecule/shared/reconfigure/test_bad_input.py):
the drill helpers live in the `celerykit_testing` package now. Remove once nothing imports it."""

from celerykit_testing.drills import *  # noqa: F403
