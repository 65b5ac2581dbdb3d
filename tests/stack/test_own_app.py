"""The switch to run your own app: its directory, its requirements, its module path for -A."""

import json
import subprocess
from pathlib import Path

from conftest import Compose, compose_env

IMAGE = "celerykit/celery:test-own-app"


def test_a_users_app_with_its_requirements_runs_on_the_pools(tmp_path: Path):
    env = compose_env(
        tmp_path,
        CELERYKIT_APP_DIR="tests/fixtures/sample_app",
        CELERYKIT_APP="acme_tasks:app",
        CELERYKIT_IMAGE=IMAGE,
    )
    compose = Compose("celerykit-own-app", env)
    try:
        compose.run("up", "--build", "--detach", "--wait", "worker-high")
        script = (
            "import json; from celerykit.app import app; "
            "print(json.dumps(app.send_task('acme.size', args=[123456789]).get(timeout=60)))"
        )
        out = compose.run("exec", "-T", "worker-high", "python", "-c", script).stdout
        result = json.loads(out.strip().splitlines()[-1])
        assert result["size"] == "123.5 MB"  # computed by the app's own requirement, humanize
        assert result["worker"].startswith("high@")  # routed by the app to high_priority
    finally:
        compose.down()
        subprocess.run(["docker", "image", "rm", "-f", IMAGE], capture_output=True, check=False)
