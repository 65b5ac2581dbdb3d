"""State survives a Redis crash: what Redis wrote to its AOF. (Queued tasks and Flower's history: test_faults.py.)"""

import subprocess
import time
import uuid

from conftest import Stack


def redis_cli(stack: Stack, script: str) -> str:
    """Run redis-cli as the Celery user inside the Redis container, commands on stdin."""
    command = 'REDISCLI_AUTH=$(cat "$CELERYKIT_REDIS_PASSWORD_FILE") redis-cli --no-auth-warning --user celery'
    result = subprocess.run(
        ["docker", "exec", "-i", stack.compose.container("redis"), "sh", "-c", command],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def test_transactions_survive_a_redis_crash(stack: Stack):
    """Writes made in MULTI/EXEC (kombu's unacked bookkeeping, requeues and acks) are replayed
    from the AOF after a SIGKILL, like plain writes. Redis 7.0 re-checks the default user's ACL
    at each replayed EXEC and drops this very transaction when that user has no permissions
    (seen with `user default off`; redis/redis#14541); the kit's ACL file avoids that."""
    key = f"celerykit:test:{uuid.uuid4().hex}"
    # As kombu records a delivered message (QoS.append), in a transaction; then a plain write.
    redis_cli(
        stack,
        f"MULTI\nZADD {key}:index 1 tag\nHSET {key}:unacked tag payload\nEXEC\n"
        f"SET {key}:plain 1\nEXPIRE {key}:plain 600\nEXPIRE {key}:index 600\nEXPIRE {key}:unacked 600\n",
    )
    time.sleep(1.5)  # appendfsync everysec: what was written a second ago is on disk
    stack.compose.run("kill", "--signal", "SIGKILL", "redis")
    stack.compose.run("start", "redis")
    stack.compose.wait_healthy("redis")
    replies = redis_cli(stack, f"GET {key}:plain\nZSCORE {key}:index tag\nHGET {key}:unacked tag\n").split()
    assert replies == ["1", "1", "payload"], replies
