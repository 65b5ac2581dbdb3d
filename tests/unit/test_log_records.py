"""JSON log lines (celerykit.logs): the formatter's keys, one line whatever the record holds, and
the setup that gives Celery's, Flower's and a service's own output that formatter.

Whatever changes a process's logging (handlers, sys.stdout, Celery's signals) runs in a Python
subprocess of its own; the stack and Molecule tests read the real services' lines."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from celery import Celery

from celerykit import logs, services
from celerykit.settings import Env

KEYS = set(logs.KEYS)


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"celerykit.test.{id(stream)}")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def lines(stream: io.StringIO) -> list[dict]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_a_record_in_a_task_carries_every_key_and_the_task():
    app = Celery("celerykit_test_logs", set_as_current=False)
    app.conf.task_always_eager = True
    logger, stream = capture(logs.JsonFormatter(pool="high", hostname="high@worker-high"))

    @app.task(name="celerykit.test.speaks")
    def speaks():
        logger.info("inside %s", "the task")

    speaks.apply(task_id="0b5f6c1e-task")
    (line,) = lines(stream)
    assert KEYS | {"task_id", "task_name"} == set(line)
    assert logs.TIME.fullmatch(line["time"]), line["time"]
    assert line["level"] == "INFO"
    assert line["logger"] == logger.name
    assert line["message"] == "inside the task"
    assert (line["pool"], line["hostname"], line["process"]) == ("high", "high@worker-high", "MainProcess")
    assert (line["task_id"], line["task_name"]) == ("0b5f6c1e-task", "celerykit.test.speaks")


def test_outside_a_task_there_are_no_task_keys_and_the_pool_may_be_null():
    logger, stream = capture(logs.JsonFormatter())
    logger.warning("no task here")
    (line,) = lines(stream)
    assert set(line) == KEYS
    assert line["pool"] is None
    assert line["hostname"] == logs.socket.gethostname()


def test_celerys_lines_about_a_task_name_it():
    """Celery's "received", "succeeded" and "raised" lines pass the task's id and name as `data`."""
    logger, stream = capture(logs.JsonFormatter())
    context = {"id": "5d1e-received", "name": "celerykit.demo.urgent"}
    logger.info("Task %(name)s[%(id)s] received", context, extra={"data": context})
    (line,) = lines(stream)
    assert line["message"] == "Task celerykit.demo.urgent[5d1e-received] received"
    assert (line["task_id"], line["task_name"]) == ("5d1e-received", "celerykit.demo.urgent")


def test_an_exception_is_one_line_with_its_traceback():
    logger, stream = capture(logs.JsonFormatter())
    try:
        raise ValueError("it broke\non two lines")
    except ValueError:
        logger.exception("task failed")
    (line,) = lines(stream)  # one line, though the traceback and the message have several
    assert line["message"] == "task failed"
    assert line["level"] == "ERROR"
    assert line["exc_info"].startswith("Traceback (most recent call last):\n")
    assert line["exc_info"].endswith("ValueError: it broke\non two lines")
    assert "test_an_exception_is_one_line_with_its_traceback" in line["exc_info"]


@pytest.mark.parametrize("message", ["first\nsecond\n", "carriage\rreturn", "tab\tand\x00nul", "line\u2028separator é"])
def test_a_message_with_line_breaks_stays_on_one_line(message: str):
    logger, stream = capture(logs.JsonFormatter())
    logger.info(message)
    assert stream.getvalue().count("\n") == 1
    (line,) = lines(stream)
    assert line["message"] == message


def test_the_time_is_utc_with_milliseconds():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.created, record.msecs = 1700000000.1234, 123.4
    assert json.loads(logs.JsonFormatter().format(record))["time"] == "2023-11-14T22:13:20.123Z"


def test_text_leaves_logging_as_it_is():
    root = logging.getLogger()
    before = (list(root.handlers), sys.stdout, sys.stderr)
    assert logs.setup(Env({"CELERYKIT_LOG_FORMAT": "text"}), argv=["celerykit", "exporter"]) is None
    assert (list(root.handlers), sys.stdout, sys.stderr) == before


@pytest.mark.parametrize(
    ("environ", "argv", "service"),
    [
        ({logs.SERVICE_VARIABLE: "worker"}, ["/usr/lib/python3/celery/__main__.py", "-A", "x", "worker"], "worker"),
        ({logs.SERVICE_VARIABLE: "flower"}, ["celery"], "flower"),
        ({}, ["/opt/celerykit/bin/celerykit", "exporter"], "exporter"),
        ({}, ["/opt/celerykit/bin/celerykit", "health", "exporter"], None),
        ({}, ["/usr/lib/python3/celery/__main__.py", "-A", "celerykit.app", "inspect", "active"], None),
        ({}, ["-c"], None),
    ],
)
def test_which_processes_are_services(environ: dict, argv: list[str], service: str | None):
    assert logs.service_of(Env(environ), argv) == service


def run(script: str, *, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERYKIT_", "_CELERYKIT_", "CELERY_"))}
    env.update(environ or {})
    command = [sys.executable, "-c", textwrap.dedent(script)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def every_line_json(text: str) -> list[dict]:
    found, other = logs.records(text)
    assert not other, f"not JSON records: {other} in\n{text}"
    return found


def test_records_are_told_from_other_lines():
    formatter = logs.JsonFormatter()
    good = formatter.format(logging.LogRecord("x", logging.INFO, __file__, 1, "fine", None, None))
    not_ours = json.dumps({"time": "yesterday", **{key: None for key in logs.KEYS[1:]}})
    text = "\n".join([good, " -------------- celery@host v5.7.0", "", "[1, 2]", not_ours, good])
    found, other = logs.records(text)
    assert [r["message"] for r in found] == ["fine", "fine"]
    assert other == [" -------------- celery@host v5.7.0", "", "[1, 2]", not_ours]


WORKER_LIKE = """
import logging, sys, warnings
from celery import Celery, signals
from celery.apps import worker
from celery.utils.log import get_multiprocessing_logger, get_task_logger
from celerykit import logs
from celerykit.settings import Env

logs.setup(Env({"CELERYKIT_LOG_FORMAT": "json", "CELERYKIT_POOL_NAME": "high", logs.SERVICE_VARIABLE: "worker"}))
logging.getLogger("celerykit.test").warning("before Celery set logging up")
app = Celery("celerykit_test_logs")
signals.celeryd_init.send(sender="high@worker-high", instance=None, conf=app.conf, options={})
app.log.setup(logging.INFO, redirect_stdouts=True)  # what the worker and Beat call
logging.getLogger("celery.worker").info("a worker line")
get_task_logger("celerykit.test.tasks").info("a task logger line")
get_multiprocessing_logger().error("a billiard line")
print("printed\\non two lines")
warnings.warn("a captured warning")
worker.safe_say("worker: Warm shutdown (MainProcess)", sys.__stdout__)
raise RuntimeError("uncaught")
"""


def test_celerys_own_setup_writes_json_only():
    """Celery's logging setup as its worker and Beat run it: every handler it installs, stdout
    redirected to logging, warnings, the shutdown message from a signal handler, an uncaught error."""
    result = run(WORKER_LIKE)
    assert result.returncode == 1
    out, err = every_line_json(result.stdout), every_line_json(result.stderr)
    assert [line["message"] for line in out] == ["worker: Warm shutdown (MainProcess)"]
    messages = {line["message"]: line for line in err}
    for expected in ("before Celery set logging up", "a worker line", "a task logger line", "a billiard line"):
        assert expected in messages, err
    assert messages["printed\non two lines"]["logger"] == "celery.redirected"
    assert any("a captured warning" in m and line["logger"] == "py.warnings" for m, line in messages.items())
    assert "RuntimeError: uncaught" in messages["Uncaught exception"]["exc_info"]
    assert {(line["pool"], line["hostname"]) for line in out + err[1:]} == {("high", "high@worker-high")}


def test_the_exporters_messages_are_json_lines():
    result = run(
        """
        import sys
        from celerykit import logs
        from celerykit.settings import Env
        logs.setup(Env({"CELERYKIT_LOG_FORMAT": "json"}), argv=["/opt/celerykit/bin/celerykit", "exporter"])
        print("exporter: serving /metrics", file=sys.stderr, flush=True)
        """
    )
    assert result.returncode == 0, result.stderr
    (line,) = every_line_json(result.stderr)
    assert line["message"] == "exporter: serving /metrics"
    assert line["pool"] is None


def test_flowers_tornado_handlers_get_the_formatter():
    """Even a handler tornado adds itself (--log_to_stderr) writes JSON once Flower parsed its options."""
    result = run(
        """
        import logging
        import tornado.options
        from celerykit import logs
        from celerykit.settings import Env
        env = {"CELERYKIT_LOG_FORMAT": "json", "CELERYKIT_POOL_NAME": "high", logs.SERVICE_VARIABLE: "flower"}
        logs.setup(Env(env))
        tornado.options.parse_command_line(["flower", "--logging=info", "--log_to_stderr"])
        logging.getLogger("tornado.general").info("from tornado")
        """
    )
    assert result.returncode == 0, result.stderr
    lines = every_line_json(result.stderr)
    assert [line["message"] for line in lines] == ["from tornado"] * len(lines)
    assert lines[0]["pool"] is None


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "redis").write_text("a-generated-password-of-32-chars\n")
    return {"CELERYKIT_REDIS_PASSWORD_FILE": str(tmp_path / "redis"), "CELERYKIT_POOL_NAME": "high"}


@pytest.mark.parametrize("command", [services.worker_command, services.beat_command])
def test_json_turns_celerys_banners_off_and_text_keeps_them(env: dict[str, str], command):
    quiet = command(Env(env))
    assert quiet[quiet.index("--quiet") + 1] in ("worker", "beat")  # a global option, before the subcommand
    assert "--quiet" not in command(Env({**env, "CELERYKIT_LOG_FORMAT": "text"}))


def test_a_service_is_started_knowing_it_is_one(env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    started = {}
    monkeypatch.setattr(services.os, "execve", lambda path, argv, environ: started.update(environ))
    services.exec_service("beat", Env(env))
    assert started[logs.SERVICE_VARIABLE] == "beat"
