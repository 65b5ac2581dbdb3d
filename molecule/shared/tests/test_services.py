"""Every unit the inventory puts on a host is active and enabled, and hardened where it is the kit's."""

import pytest
from conftest import hosts, unit_names

UNITS = [(host, unit) for host in hosts("all") for unit in unit_names(host)]


@pytest.mark.parametrize(("node", "unit"), UNITS, ids=[f"{h.backend.host}:{u}" for h, u in UNITS])
def test_unit_is_active_and_enabled(node, unit):
    service = node.service(unit)
    assert service.is_running, node.run(f"journalctl -u {unit} -n 30 --no-pager").stdout
    assert service.is_enabled


KIT_UNITS = [(h, u) for h, u in UNITS if u.startswith(("celery-", "flower"))]


@pytest.mark.parametrize(("node", "unit"), KIT_UNITS, ids=[f"{h.backend.host}:{u}" for h, u in KIT_UNITS])
def test_kit_units_run_unprivileged_and_stop_warmly(node, unit):
    show = node.check_output(f"systemctl show {unit} -p User -p KillMode -p TimeoutStopUSec -p Restart")
    props = dict(line.split("=", 1) for line in show.splitlines())
    assert props["User"] == "celerykit"
    assert props["Restart"] == "always"
    if unit.startswith("celery-worker@"):
        assert props["KillMode"] == "mixed"  # TERM to the main process only: Celery's warm shutdown
        assert props["TimeoutStopUSec"] == "1h 1min"  # above the 3600 s hard time limit
