"""nginx in front of Flower, checked from outside: auth, redirect, TLS, HSTS, metrics, WebSocket."""

import pytest
from conftest import Stack

from celerykit.verify import checks


@pytest.mark.parametrize(
    "check",
    [
        checks.https_redirect,  # HTTP -> 301 to HTTPS, same path
        checks.auth_required,  # UI, API and control endpoints: 401 without credentials
        checks.auth_accepted,  # 200 with credentials, 401 with a wrong password
        checks.tls_versions,  # TLS 1.2/1.3 accepted, 1.0/1.1 refused
        checks.hsts,  # Strict-Transport-Security for at least a year
        checks.metrics_hidden,  # /flower/metrics not served to outsiders
    ],
    ids=lambda check: check.__name__,
)
def test_proxy_keeps_its_promise(stack: Stack, check):
    result = check(stack.target)
    assert result, result.detail


def test_websocket_upgrade_and_echo_through_the_tls_endpoint(stack: Stack):
    result = checks.websocket(stack.target, "/ws-echo/")
    if not result:  # what the proxy and the echo server saw
        logs = stack.compose.run("logs", "--no-color", "--tail", "20", "nginx", "ws-echo", check=False).stdout
        pytest.fail(f"{result.detail}\n{logs[-4000:]}")


def test_only_nginx_publishes_a_port(stack: Stack):
    published = {
        name
        for name, service in stack.compose.services().items()
        if any(p.get("PublishedPort") for p in service.get("Publishers") or [])
    }
    assert published == {"nginx", "alert-sink"}  # the sink: the tests' own (tests/support/compose.test.yaml)
