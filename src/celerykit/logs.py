"""The services' logs as one JSON object per line (CELERYKIT_LOG_FORMAT=json, the default).

Every line a worker (main and pool processes), Beat, Flower or the exporter writes is an object
with `time` (ISO 8601, UTC, milliseconds), `level`, `logger`, `message`, `pool`
(CELERYKIT_POOL_NAME; null outside a worker), `hostname` (a worker's Celery node name, such as
`high@worker1`; the host's name otherwise) and `process` (MainProcess, ForkPoolWorker-1...);
in a task, or on Celery's lines about one, also `task_id` and `task_name`; with an exception,
`exc_info` (its traceback). Newlines inside a value are escaped, so a traceback stays on its line.
With "text" nothing here runs: Celery's and Flower's own formats, as before.

How each process gets there, set up when `celerykit.app` is imported:

- The root logger gets a JSON handler on stderr (until Celery installs its own), and warnings
  go through logging.
- Celery's worker and Beat configure logging themselves (level, the task logger, stdout and
  stderr redirected to the `celery.redirected` logger). The kit keeps all of that and only gives
  every handler Celery installed the JSON formatter (`after_setup_logger`,
  `after_setup_task_logger`); pool processes inherit those handlers when they are forked.
  Connecting `setup_logging` instead would leave the whole setup to the kit, and Celery would
  then skip redirecting stdout (print() in tasks) in the main process.
- What Celery writes around logging: the worker's and Beat's banners are off (`--quiet`, which
  turns off nothing else; celerykit.services passes it) and their gist is logged instead; the
  messages the worker's signal handlers write straight to its descriptors ("worker: Warm
  shutdown (MainProcess)") are written as JSON lines.
- A kit service's own stdout and stderr (Beat's "Stale pidfile" before its logging is set up,
  the exporter's messages, an uncaught exception) go to the `celery.redirected` logger, as
  Celery redirects them in its worker. Which process is a service: the one celerykit.services
  exec's (it sets SERVICE_VARIABLE) and `celerykit exporter`. Other commands that import the app
  (`celery inspect`, health checks) keep their stdout.
- Flower: tornado leaves the root logger's handler alone when it has one; its handlers are given
  the JSON formatter again once tornado has parsed Flower's options, in case it added its own.

A formatter on the standard library, not python-json-logger: the keys and the one-line guarantee
are the kit's, a few lines do it, and hosts need no further package (Debian's python-json-logger
2.0.1 has another module path than PyPI's 4.x).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celerykit.settings import Env, log_format

SERVICE_VARIABLE = "_CELERYKIT_SERVICE"  # set by celerykit.services for the process it exec's
SERVICES = ("worker", "beat", "flower", "exporter")
REDIRECTED = "celery.redirected"  # the logger Celery's worker redirects stdout and stderr to
REDIRECT_LEVEL = logging.WARNING  # Celery's worker_redirect_stdouts_level
# Every record has these keys; records in (or about) a task also task_id and task_name.
KEYS = ("time", "level", "logger", "message", "pool", "hostname", "process")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")  # ISO 8601, UTC, milliseconds


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def __init__(self, pool: str | None = None, hostname: str | None = None) -> None:
        super().__init__()
        self.pool = pool
        self.hostname = hostname or socket.gethostname()

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = datetime.fromtimestamp(record.created, tz=UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pool": self.pool,
            "hostname": self.hostname,
            "process": record.processName,
        }
        entry.update(task_of(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        # json escapes newlines and every other control character: one record, one line.
        return json.dumps(entry, default=str)


def records(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The kit's records in a service's output (docker logs, the journal), and the lines that are
    not one: a JSON object with every key of KEYS and its time as TIME."""
    found: list[dict[str, Any]] = []
    other: list[str] = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and all(key in record for key in KEYS) and TIME.fullmatch(str(record["time"])):
            found.append(record)
        else:
            other.append(line)
    return found, other


def task_of(record: logging.LogRecord) -> dict[str, str]:
    """The task the record is about: the one running in this process, else the one Celery's own
    lines name in their `data` (a task received, succeeded or failed, in the worker's main process)."""
    from celery._state import get_current_task

    task = get_current_task()
    if task is not None and task.request is not None and task.request.id is not None:
        return {"task_id": task.request.id, "task_name": task.name}
    data = getattr(record, "data", None)
    if isinstance(data, dict) and data.get("id") and data.get("name"):
        return {"task_id": str(data["id"]), "task_name": str(data["name"])}
    return {}


def service_of(env: Env, argv: Sequence[str]) -> str | None:
    """The kit service this process runs, if it is one."""
    named = env.get(SERVICE_VARIABLE)
    if named in SERVICES:
        return named
    if argv and Path(argv[0]).name == "celerykit" and list(argv[1:2]) == ["exporter"]:
        return "exporter"
    return None


def setup(env: Env, argv: Sequence[str] | None = None) -> JsonFormatter | None:
    """Set this process up for JSON lines, if that is the format; return the formatter."""
    if log_format(env) != "json":
        return None
    service = service_of(env, sys.argv if argv is None else argv)
    pool = env.get("CELERYKIT_POOL_NAME") if service in (None, "worker") else None
    formatter = JsonFormatter(pool=pool)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.__stderr__)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    logging.captureWarnings(True)
    _connect_celery(formatter)
    if service is not None:
        redirect_streams()
    if service == "flower":
        import tornado.options

        # Runs after tornado's own callback (enable_pretty_logging), registered when it was imported.
        tornado.options.add_parse_callback(lambda: _tornado_configured(formatter))
    return formatter


def _tornado_configured(formatter: logging.Formatter) -> None:
    """A handler tornado added on stderr (--log_to_stderr) writes to the redirected stream, back
    into logging: the root logger's own handler writes those records already."""
    from celery.utils.log import LoggingProxy

    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(getattr(handler, "stream", None), LoggingProxy):
            root.removeHandler(handler)
    use(formatter, root)


def use(formatter: logging.Formatter, *loggers: logging.Logger | None) -> None:
    """Give every handler of these loggers the formatter."""
    for logger in loggers:
        for handler in logger.handlers if logger is not None else ():
            handler.setFormatter(formatter)


def redirect_streams() -> None:
    """This process's stdout and stderr become log records (Celery's LoggingProxy, as in its
    worker), and an uncaught exception one record with its traceback."""
    from celery.utils.log import LoggingProxy, get_logger

    proxy = LoggingProxy(get_logger(REDIRECTED), REDIRECT_LEVEL)
    sys.stdout = sys.stderr = proxy

    def log_uncaught(kind, value, traceback) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, traceback)
            return
        logging.getLogger("celerykit").critical("Uncaught exception", exc_info=(kind, value, traceback))

    sys.excepthook = log_uncaught


def _connect_celery(formatter: JsonFormatter) -> None:
    from celery import signals
    from celery.utils.log import get_multiprocessing_logger

    def root_configured(logger: logging.Logger, **_: Any) -> None:
        use(formatter, logger, get_multiprocessing_logger())

    def task_logger_configured(logger: logging.Logger, **_: Any) -> None:
        use(formatter, logger)

    def worker_named(sender: str, **_: Any) -> None:
        formatter.hostname = str(sender)  # before the worker sets up logging and forks
        _json_signal_messages(formatter)

    def worker_set_up(instance: Any, **_: Any) -> None:
        if not getattr(instance, "quiet", False):  # Celery prints its banner after this
            return
        # The banner --quiet turned off, as one record (the URIs in it hide the password).
        info = instance.startup_info(artlines=False) + (instance.extra_info() or "")
        logging.getLogger("celery.apps.worker").info("%s", info.strip())

    def beat_started(sender: Any, **_: Any) -> None:
        scheduler = sender.scheduler
        logging.getLogger("celery.apps.beat").info(
            "beat: scheduler %s.%s, schedule %s, max interval %s s",
            type(scheduler).__module__,
            type(scheduler).__qualname__,
            sender.schedule_filename,
            scheduler.max_interval,
        )

    # dispatch_uid: once per process, however often setup() runs
    signals.after_setup_logger.connect(root_configured, weak=False, dispatch_uid="celerykit-json-root")
    signals.after_setup_task_logger.connect(task_logger_configured, weak=False, dispatch_uid="celerykit-json-task")
    signals.celeryd_init.connect(worker_named, weak=False, dispatch_uid="celerykit-json-hostname")
    signals.celeryd_after_setup.connect(worker_set_up, weak=False, dispatch_uid="celerykit-json-banner")
    signals.beat_init.connect(beat_started, weak=False, dispatch_uid="celerykit-json-beat-banner")


def _json_signal_messages(formatter: JsonFormatter) -> None:
    """The worker's signal handlers write their messages ("worker: Warm shutdown (MainProcess)")
    with os.write to the descriptor, bypassing logging and sys.stdout: write them as JSON lines,
    the same way (a handler must not take logging's locks)."""
    from celery.apps import worker

    original = getattr(worker.safe_say, "__wrapped__", worker.safe_say)
    write = getattr(worker, "_original_os_write", os.write)

    def safe_say(msg: str, f: Any = sys.__stderr__) -> None:
        record = logging.LogRecord("celery.apps.worker", logging.WARNING, __file__, 0, str(msg).strip(), None, None)
        # As Celery's: losing the line must never stop the caller (a shutdown handler).
        with contextlib.suppress(AttributeError, OSError, ValueError):
            write(f.fileno(), (formatter.format(record) + "\n").encode())

    safe_say.__wrapped__ = original  # type: ignore[attr-defined]
    worker.safe_say = safe_say
