"""The baseline: what a user would otherwise deploy. One worker, Celery's defaults, the same tasks.

Only the broker and result backend are set (a separate Redis database of the same Redis, password read
from the secrets file). BENCH_RELIABLE=1 adds exactly the kit's reliability settings (late ack, requeue
on a lost worker, prefetch 1) so their cost can be measured alone; BENCH_CONF (a JSON object of Celery
settings) adds more of the kit's settings, one group at a time, to find what a difference costs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

from benchtasks import app


def broker_url() -> str:
    password = Path(os.environ["BENCH_REDIS_PASSWORD_FILE"]).read_text().strip()
    user = os.environ.get("BENCH_REDIS_USER", "celery")
    host = os.environ.get("BENCH_REDIS_HOST", "redis")
    database = int(os.environ.get("BENCH_REDIS_DB", "1"))
    return f"redis://{quote(user, safe='')}:{quote(password, safe='')}@{host}:6379/{database}"


app.conf.broker_url = app.conf.result_backend = broker_url()

if os.environ.get("BENCH_RELIABLE") == "1":
    app.conf.task_acks_late = True
    app.conf.task_reject_on_worker_lost = True
    app.conf.worker_prefetch_multiplier = 1

app.conf.update(json.loads(os.environ.get("BENCH_CONF") or "{}"))
