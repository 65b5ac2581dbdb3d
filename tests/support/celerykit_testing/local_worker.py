"""A real one-process prefork Celery worker on a test's own app module, for the unit tests that need
Celery's pool and event loop (the kit's fixes, its worker steps), against a throw-away Redis."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType


@contextmanager
def app_module(directory: Path, name: str, source: str) -> Iterator[ModuleType]:
    """The module `name` written into `directory` and imported, to send tasks with; forgotten at the end."""
    (directory / f"{name}.py").write_text(source)
    sys.path.insert(0, str(directory))
    try:
        module = importlib.import_module(name)
    finally:
        sys.path.remove(str(directory))
    try:
        yield module
    finally:
        sys.modules.pop(name, None)


def start_worker(module: ModuleType, queue: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`celery worker` on the module's app: one pool process, consuming `queue`; no gossip, mingle or
    heartbeat (nothing but the test's tasks goes through Redis); warnings only."""
    directory = Path(module.__file__).parent
    argv = [sys.executable, "-m", "celery", "-A", module.__name__, "worker", "-P", "prefork", "-c", "1", "-Q", queue]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING", *args]
    environ = {**os.environ, "PYTHONPATH": str(directory), **(env or {})}
    return subprocess.Popen(argv, cwd=directory, env=environ, stdout=subprocess.DEVNULL)


def stop_workers(workers: list[subprocess.Popen]) -> None:
    """Warm shutdown (TERM), each waited for."""
    for worker in workers:
        worker.terminate()
        worker.wait(timeout=30)
