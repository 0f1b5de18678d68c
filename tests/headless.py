"""Headless Chromium driven through its DevTools protocol over a pipe (``--remote-debugging-pipe``:
JSON messages separated by NUL bytes on file descriptors 3 and 4), for the run reports'
browser tests. No WebSocket client, no network: the page is a local file.

``Chromium.check(path, width)`` loads a page at a viewport ``width`` (CSS pixels), waits for
its load event and returns a ``PageCheck``: the page's horizontal overflow, its images that
did not decode, every URL it asked for and those it refused, console and log messages (a Content-Security-Policy
refusal is one), and a full-page PNG screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BINARIES = ("chromium", "chromium-headless-shell")  # Debian's package `chromium` (`make chromium`)
TIMEOUT_S = 30.0

# What the page reports about itself, evaluated by DevTools (the page itself runs no script).
PAGE_FACTS = """(() => {
  const root = document.documentElement;
  const wide = [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > root.clientWidth + 0.5)
    .slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + (e.textContent || '').slice(0, 40));
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))
    .map(i => i.alt || i.src.slice(0, 40));
  return {scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, wide: wide,
          images: document.images.length, broken: broken, title: document.title};
})()"""


def _above_nine(fd: int) -> int:
    """A duplicate of ``fd`` numbered 10 or more (``fd`` is closed)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


def find_chromium() -> str | None:
    """The path of an installed headless-capable Chromium, or None."""
    return next((p for p in map(shutil.which, BINARIES) if p), None)


@dataclass
class PageCheck:
    """What one page load showed (see module doc)."""

    width: int
    scroll_width: int
    client_width: int
    wide: list[str]
    images: int
    broken: list[str]
    title: str
    requests: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # requests the browser refused (blockedReason), e.g. "csp"
    messages: list[str] = field(default_factory=list)
    screenshot: bytes = b""

    def outside_requests(self, page_url: str) -> list[str]:
        """URLs the page asked for other than itself and inline ``data:`` images."""
        return [u for u in self.requests if u != page_url and not u.startswith("data:")]


class Chromium:
    """One headless Chromium; ``check`` loads pages in fresh tabs. Use as a context manager."""

    def __init__(self, binary: str):
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The child's ends above 9, so putting them on 3 and 4 never overwrites the other one.
        to_browser_r, from_browser_w = (_above_nine(fd) for fd in (to_browser_r, from_browser_w))
        args = [binary, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
                "--disable-background-networking", "--disable-component-update", "--mute-audio",
                "--hide-scrollbars", f"--user-data-dir={self._profile}", "about:blank"]
        # bash (dash takes one-digit descriptors only) puts the pipe ends on the descriptors
        # Chromium reads (3) and writes (4).
        self._proc = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}', "bash", *args],
            pass_fds=(to_browser_r, from_browser_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    # ------------------------------------------------------------------ protocol

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and wait for its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def _wait_event(self, method: str, session: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self._events):
            self._events.append(self._read_message(deadline))

    # ------------------------------------------------------------------ pages

    def check(self, path: Path, width: int, height: int = 900) -> PageCheck:
        """Load ``path`` at ``width`` x ``height`` CSS pixels and report on it (``PageCheck``)."""
        self._events.clear()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            for domain in ("Page", "Network", "Log", "Runtime"):
                self.send(f"{domain}.enable", session=session)
            self.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session)
            self.send("Page.navigate", {"url": path.resolve().as_uri()}, session)
            self._wait_event("Page.loadEventFired", session)
            facts = self.send("Runtime.evaluate", {"expression": PAGE_FACTS, "returnByValue": True},
                              session)["result"]["value"]
            shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session)
        finally:
            self.send("Target.closeTarget", {"targetId": target})
        mine = [e for e in self._events if e.get("sessionId") == session]
        sent = {e["params"]["requestId"]: e["params"]["request"]["url"] for e in mine
                if e.get("method") == "Network.requestWillBeSent"}
        blocked = [f"{sent.get(e['params']['requestId'])}: {e['params']['blockedReason']}" for e in mine
                   if e.get("method") == "Network.loadingFailed" and e["params"].get("blockedReason")]
        messages = [e["params"]["entry"]["text"] for e in mine if e.get("method") == "Log.entryAdded"]
        messages += [" ".join(str(a.get("value", a.get("description", ""))) for a in e["params"].get("args", []))
                     for e in mine if e.get("method") == "Runtime.consoleAPICalled"]
        messages += [e["params"]["exceptionDetails"].get("text", "") for e in mine
                     if e.get("method") == "Runtime.exceptionThrown"]
        return PageCheck(width=width, scroll_width=facts["scrollWidth"], client_width=facts["clientWidth"],
                         wide=facts["wide"], images=facts["images"], broken=facts["broken"], title=facts["title"],
                         requests=list(sent.values()), blocked=blocked, messages=messages, screenshot=base64.b64decode(shot["data"]))
