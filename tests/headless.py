"""A real headless browser for the tests: Debian's ``chromium`` driven through ``chromedriver``'s
W3C WebDriver HTTP API (httpx; no Selenium). Tests that use :func:`browser` skip, saying why, only
when chromium or chromedriver is not installed (``apt-get install chromium chromium-driver``)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1000"]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


def chromium() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def require_chromium() -> tuple[str, str]:
    found = chromium()
    if found is None:
        pytest.skip("chromium and chromedriver are not installed (Debian: apt-get install -y "
                    "chromium chromium-driver; .ci/run installs them)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """One WebDriver session: open a page, run a script, find and click elements."""

    def __init__(self, client: httpx.Client, session: str):
        self.http, self.session = client, session

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        r = self.http.request(method, f"/session/{self.session}{path}", json=body)
        out = r.json()
        if r.status_code != 200:
            raise AssertionError(f"WebDriver {method} {path}: {out.get('value')}")
        return out["value"]

    def get(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def js(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``arguments`` holds ``args``) and return its value."""
        return self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait(self, script: str, timeout: float = 30.0) -> Any:
        """Poll ``script`` until it returns something truthy (timeout: an assertion)."""
        end = time.monotonic() + timeout
        while True:
            v = self.js(script)
            if v:
                return v
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for: {script}")
            time.sleep(0.2)

    def find(self, css: str) -> dict:
        return self._call("POST", "/element", {"using": "css selector", "value": css})

    def click(self, css: str) -> None:
        el = self.find(css)[ELEMENT]
        self._call("POST", f"/element/{el}/click", {})

    def select(self, css: str, value: str) -> None:
        """Choose ``value`` in the <select> at ``css`` as a user would (a change event)."""
        self.js("var s = document.querySelector(arguments[0]); s.value = arguments[1];"
                "s.dispatchEvent(new Event('change', {bubbles: true}));", css, value)


@contextmanager
def browser(extra_args: list[str] | None = None) -> Iterator[Browser]:
    """A headless Chromium session (skips the test when chromium is not installed);
    ``extra_args``: more command-line switches (e.g. refusing every network request)."""
    binary, driver = require_chromium()
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        proc = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120, trust_env=False)
        session = None
        try:
            end = time.monotonic() + 30
            while True:
                try:
                    if client.get("/status").json()["value"]["ready"]:
                        break
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                if time.monotonic() > end:
                    raise AssertionError("chromedriver did not start within 30 s")
                time.sleep(0.1)
            caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
                "binary": binary,
                "args": [*CHROMIUM_ARGS, *(extra_args or []), f"--user-data-dir={profile}"]}}}}
            r = client.post("/session", json=caps)
            if r.status_code != 200:
                raise AssertionError(f"chromedriver: no session: {r.text[:500]}")
            session = r.json()["value"]["sessionId"]
            yield Browser(client, session)
        finally:
            if session:
                try:
                    client.delete(f"/session/{session}")
                except httpx.HTTPError:
                    pass
            client.close()
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def file_url(path: Path) -> str:
    return path.resolve().as_uri()
