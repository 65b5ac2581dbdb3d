"""Each pool consumes exactly the queues the inventory gave it, seen by Celery's own inspect."""

import json

from conftest import pools_of

testinfra_hosts = ["ansible://celery_workers"]


def test_each_pool_consumes_exactly_its_queues(host):
    hostname = host.check_output("hostname")
    out = host.check_output("celerykit-celery inspect active_queues --json --timeout 10")
    replies = json.loads(out.strip().splitlines()[-1])
    mine = {
        name.split("@")[0]: {q["name"] for q in queues}
        for name, queues in replies.items()
        if name.endswith(f"@{hostname}")
    }
    assert mine == {pool: set(queues) for pool, queues in pools_of(host).items()}
