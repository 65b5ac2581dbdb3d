"""Redis refuses anonymous clients, lets the Celery user in, and denies it admin commands."""

import pytest
from conftest import secret_file

testinfra_hosts = ["ansible://redis"]


def redis_cli(host, *args, authenticated=False):
    """redis-cli on the Redis host, anonymous or as the Celery user (its password from a file)."""
    auth = f'REDISCLI_AUTH="$(cat {secret_file(host, "celerykit_redis_password")})" ' if authenticated else ""
    user = "--user celery " if authenticated else ""
    tls = "--tls --cacert /etc/redis/tls/ca.crt " if over_tls(host) else ""  # its only port then
    return host.run(f"{auth}redis-cli {tls}--no-auth-warning {user}-h 127.0.0.1 " + " ".join(args))


def over_tls(host) -> bool:
    return "tls-port" in host.file("/etc/redis/redis.conf").content_string


def test_anonymous_clients_are_refused(host):
    assert "NOAUTH" in redis_cli(host, "ping").stdout


def test_the_celery_user_gets_in(host):
    assert redis_cli(host, "ping", authenticated=True).stdout.strip() == "PONG"


@pytest.mark.parametrize("command", ["FLUSHALL", "FLUSHDB", "CONFIG GET requirepass", "SHUTDOWN NOSAVE"])
def test_the_celery_user_cannot_administer(host, command):
    result = redis_cli(host, command, authenticated=True)
    assert "NOPERM" in result.stdout, result.stdout


def test_debug_is_refused(host):
    """Redis 7 turns DEBUG off for everyone (enable-debug-command no) before ACLs are consulted."""
    result = redis_cli(host, "DEBUG SLEEP 0", authenticated=True)
    assert "DEBUG command not allowed" in result.stdout or "NOPERM" in result.stdout, result.stdout


def test_redis_keeps_an_append_only_file(host):
    """AOF is on: Redis 7 keeps its base and incremental files under appendonlydir."""
    files = host.check_output("ls /var/lib/redis/appendonlydir").split()
    assert any(f.endswith(".incr.aof") for f in files), files
