"""The dashboard and the alert path end to end on the all-in-one host: every panel shows data
after a workload; a stopped pool's backlog warning and "no worker" alert arrive at the test's
mail and webhook sink, and are resolved once it runs again.
(Minutes of waiting on alert rules: the default scenario runs it, beside the other scenarios'
longer drills.)"""

from __future__ import annotations

import pytest
from celerykit_testing import monitoring_drills
from celerykit_testing.monitoring_drills import Monitoring
from celerykit_testing.systemd import SystemdDeployment


def test_every_dashboard_panel_has_data_after_a_workload(deployment: SystemdDeployment, monitoring: Monitoring):
    monitoring_drills.every_dashboard_panel_has_data(deployment, monitoring)


def test_a_stopped_pool_alerts_by_mail_and_webhook_and_recovers(
    deployment: SystemdDeployment, monitoring: Monitoring, capsys: pytest.CaptureFixture
):
    monitoring_drills.stopped_pool_alerts_and_recovers(deployment, monitoring, report=print)
    with capsys.disabled():
        print("\n" + capsys.readouterr().out.strip())
