"""Mitogen's linear strategy, by a name Ansible finds beside the scenarios (strategy_plugins in
.config/molecule/config.yml): the package lives in the test virtualenv, wherever that is."""

from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule  # noqa: F401
