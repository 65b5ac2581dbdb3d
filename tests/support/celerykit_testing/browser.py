"""A small headless-Chromium driver over the DevTools protocol: open a page as a person would,
answering the browser's HTTP auth challenge (not credentials in the URL), and read what it shows.

Every wait is bounded, Chromium (its whole process group) is killed on leaving the `with` block,
and pages reach loopback only: other names do not resolve, and requests to other hosts fail.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.sync.client import connect

CHROMIUM = "chromium"  # Debian's package; scripts/bootstrap-host.sh --test-tools installs it
LOOPBACK = {"127.0.0.1", "localhost"}
SETTLED = "document.readyState === 'complete'"
CALL_TIMEOUT = 10.0
NETWORK_CHANGED = "net::ERR_NETWORK_CHANGED"
ERROR_PAGE = "chrome-error://"


@dataclass(frozen=True)
class Page:
    url: str
    status: int  # HTTP status of the document, as the browser received it
    text: str  # document.body.innerText: what a person reads
    data: Any  # the value of the `read` expression, if one was given
    screenshot: Path | None


def chromium_argv(profile: Path, hosts: set[str]) -> list[str]:
    # --ignore-certificate-errors: headless Chromium takes no CA file; the proxy's certificate
    # (signed by the test CA) is verified by the TLS tests, this driver only reads pages.
    return [CHROMIUM, "--headless", "--no-sandbox", "--remote-debugging-port=0", f"--user-data-dir={profile}",
            "--ignore-certificate-errors", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,900",
            "--host-resolver-rules=MAP * ~NOTFOUND" + "".join(f", EXCLUDE {h}" for h in sorted(hosts)),
            "about:blank"]  # fmt: skip


def kill_group(pid: int) -> None:
    """Kill the browser and its renderers: Chromium leads its own process group."""
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


class Browser:
    """`with Browser((user, password), screenshots=dir) as browser: browser.open(url, until=js)`.

    Without credentials the auth challenge is cancelled, as a person pressing "Cancel" would.
    """

    def __init__(
        self,
        credentials: tuple[str, str] | None = None,
        screenshots: Path | None = None,
        timeout=30.0,
        hosts: set[str] | frozenset[str] = frozenset(),
    ):
        """`hosts`: where pages may come from besides loopback (the deployment's own proxy)."""
        self.credentials, self.screenshots, self.timeout = credentials, screenshots, timeout
        self.hosts = LOOPBACK | set(hosts)
        self._ids = itertools.count(1)

    def __enter__(self) -> Browser:
        if shutil.which(CHROMIUM) is None:
            raise FileNotFoundError(f"{CHROMIUM} is not installed: run scripts/bootstrap-host.sh --test-tools")
        with ExitStack() as stack:
            profile_dir = tempfile.TemporaryDirectory(prefix="celerykit-chromium-", ignore_cleanup_errors=True)
            profile = Path(stack.enter_context(profile_dir))
            quiet = subprocess.DEVNULL
            process = subprocess.Popen(
                chromium_argv(profile, self.hosts), stdout=quiet, stderr=quiet, start_new_session=True
            )
            stack.callback(process.wait, timeout=10)
            stack.callback(kill_group, process.pid)
            port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 15
            while not (port_file.is_file() and len(lines := port_file.read_text().split()) == 2):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError(f"Chromium gave no DevTools port within 15s (exit code {process.poll()})")
                time.sleep(0.1)
            self._ws = stack.enter_context(connect(f"ws://127.0.0.1:{lines[0]}{lines[1]}", max_size=2**26))
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def open(
        self, url: str, *, until: str = SETTLED, read: str = "", name: str = "page", reload_every=0.0, timeout=0.0
    ) -> Page:
        """Navigate a fresh tab to `url`, wait (bounded) until the JS condition `until` holds,
        reloading every `reload_every` seconds meanwhile (for pages that do not refresh themselves)."""
        timeout = timeout or self.timeout
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        session = self._call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        try:
            self._call("Fetch.enable", session, handleAuthRequests=True, patterns=[{"urlPattern": "*"}])
            deadline = time.monotonic() + timeout
            self._navigate(session, url, deadline)
            ready = f"location.href !== 'about:blank' && {SETTLED} && Boolean({until})"
            reload_at = time.monotonic() + reload_every
            while not (settled := self._evaluate(session, ready)) and time.monotonic() < deadline:
                self._pump(time.monotonic() + 0.25)
                if self._evaluate(session, "location.href").startswith(ERROR_PAGE):
                    self._navigate(session, url, deadline)  # a load that failed after it started
                elif reload_every and time.monotonic() >= reload_at:
                    self._call("Page.reload", session)
                    reload_at = time.monotonic() + reload_every
            shot = self._screenshot(session, name)
            text = self._evaluate(session, "document.body ? document.body.innerText : ''")
            if not settled:
                raise AssertionError(f"{url}: no `{until}` within {timeout}s (see {shot}):\n{text}")
            status = self._evaluate(session, "performance.getEntriesByType('navigation')[0].responseStatus")
            return Page(url, int(status), text, read and self._evaluate(session, read), shot)
        finally:
            self._call("Target.closeTarget", targetId=target)

    def _navigate(self, session: str, url: str, deadline: float) -> None:
        """Load `url`, again while Chromium reports the host's network changing: it aborts a load when
        any interface comes or goes (other test lanes create Docker networks), which says nothing of
        the page. Any other error fails at once."""
        while error := self._call("Page.navigate", session, url=url).get("errorText"):
            if error != NETWORK_CHANGED or time.monotonic() > deadline:
                raise AssertionError(f"{url}: {error}")
            time.sleep(0.5)

    def _screenshot(self, session: str, name: str) -> Path | None:
        if self.screenshots is None:
            return None
        path = self.screenshots / f"{name}.png"
        path.write_bytes(base64.b64decode(self._call("Page.captureScreenshot", session)["data"]))
        return path

    def _evaluate(self, session: str, expression: str) -> Any:
        return self._call("Runtime.evaluate", session, expression=expression, returnByValue=True)["result"].get("value")

    def _send(self, method: str, session: str | None = None, **params: Any) -> int:
        message_id = next(self._ids)
        message = {"id": message_id, "method": method, "params": params}
        self._ws.send(json.dumps(message | ({"sessionId": session} if session else {})))
        return message_id

    def _call(self, method: str, session: str | None = None, **params: Any) -> dict:
        reply = self._pump(time.monotonic() + CALL_TIMEOUT, self._send(method, session, **params))
        if reply is None or "error" in reply:
            raise AssertionError(f"DevTools {method}: {(reply or {}).get('error', f'no answer in {CALL_TIMEOUT}s')}")
        return reply["result"]

    def _pump(self, deadline: float, reply_to: int | None = None) -> dict | None:
        """Handle the browser's events until the answer to `reply_to` arrives or `deadline` passes."""
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = json.loads(self._ws.recv(timeout=left))
            except TimeoutError:
                return None
            if reply_to is not None and message.get("id") == reply_to:
                return message
            if "method" in message:
                self._answer(message["method"], message.get("sessionId"), message.get("params", {}))
        return None

    def _answer(self, event: str, session: str | None, params: dict) -> None:
        """Let paused requests to loopback through (others fail) and answer the HTTP auth
        challenge as a person at the login prompt would: the credentials, or "Cancel"."""
        request = params.get("requestId")
        if event == "Fetch.requestPaused" and urlsplit(params["request"]["url"]).hostname in self.hosts:
            self._send("Fetch.continueRequest", session, requestId=request)
        elif event == "Fetch.requestPaused":
            self._send("Fetch.failRequest", session, requestId=request, errorReason="BlockedByClient")
        elif event == "Fetch.authRequired" and self.credentials:
            user, password = self.credentials
            answer = {"response": "ProvideCredentials", "username": user, "password": password}
            self._send("Fetch.continueWithAuth", session, requestId=request, authChallengeResponse=answer)
        elif event == "Fetch.authRequired":
            answer = {"response": "CancelAuth"}
            self._send("Fetch.continueWithAuth", session, requestId=request, authChallengeResponse=answer)
