"""nginx in front of Flower, checked from outside: auth, redirect, TLS, HSTS, metrics, WebSocket."""

from conftest import Stack

from celerykit.verify import checks


def test_http_redirects_to_https(stack: Stack):
    result = checks.https_redirect(stack.target)
    assert result, result.detail


def test_flower_ui_api_and_controls_answer_401_without_credentials(stack: Stack):
    result = checks.auth_required(stack.target)
    assert result, result.detail


def test_flower_answers_200_with_credentials_and_401_with_a_wrong_password(stack: Stack):
    result = checks.auth_accepted(stack.target)
    assert result, result.detail


def test_only_tls_1_2_and_1_3_are_accepted(stack: Stack):
    result = checks.tls_versions(stack.target)
    assert result, result.detail


def test_hsts_is_sent_for_at_least_a_year(stack: Stack):
    result = checks.hsts(stack.target)
    assert result, result.detail


def test_flower_metrics_are_not_reachable_from_outside(stack: Stack):
    result = checks.metrics_hidden(stack.target)
    assert result, result.detail


def test_websocket_upgrade_and_echo_through_the_tls_endpoint(stack: Stack):
    result = checks.websocket(stack.target, "/ws-echo/")
    assert result, result.detail


def test_flower_and_redis_publish_no_port(stack: Stack):
    for service in ("flower", "redis", "worker-high", "beat"):
        assert not stack.compose.services()[service]["Publishers"] or all(
            not p.get("PublishedPort") for p in stack.compose.services()[service]["Publishers"]
        ), service
