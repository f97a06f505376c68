"""Headless Chromium driven over the Chrome DevTools Protocol, for tests that check what a page shows.

``chromium --headless --remote-debugging-port=0`` writes its port to ``<profile>/DevToolsActivePort``; the page
target's WebSocket then takes CDP commands (https://chromedevtools.github.io/devtools-protocol/): ``Page.navigate``,
``Runtime.evaluate`` (to read the rendered DOM and to click), ``Page.captureScreenshot``. The WebSocket client is
``websockets.sync`` (a Prefect dependency); nothing else is needed.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from flows.procs import stop_process

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--hide-scrollbars", "--remote-allow-origins=*"]


def chromium_path() -> str | None:
    """The Chromium binary (``chromium`` or ``chromium-browser`` on PATH), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium with one page. Use as a context manager.

    Args:
        width / height: the window size in CSS pixels.
        timeout_s: how long to wait for Chromium to start.

    Raises:
        RuntimeError: Chromium is not installed or did not start.
    """

    def __init__(self, width: int = 1400, height: int = 1800, timeout_s: float = 60):
        exe = chromium_path()
        if exe is None:
            raise RuntimeError("chromium not installed (apt-get install -y chromium)")
        self._profile = Path(tempfile.mkdtemp(prefix="cinedub-chromium-"))
        self.proc = subprocess.Popen([exe, *FLAGS, "--remote-debugging-port=0", f"--user-data-dir={self._profile}",
                                      f"--window-size={width},{height}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = self._profile / "DevToolsActivePort"
        deadline = time.time() + timeout_s
        while not port_file.is_file() or not port_file.read_text().strip():
            if time.time() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = []
        while not targets and time.time() < deadline:
            targets = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json() if t["type"] == "page"]
            time.sleep(0.1)
        from websockets.sync.client import connect

        self._ws = connect(targets[0]["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=timeout_s)
        self._id = 0
        self.send("Page.enable")
        self.send("Runtime.enable")

    def send(self, method: str, timeout_s: float = 60, **params: Any) -> dict[str, Any]:
        """One CDP command; returns its ``result`` (events arriving meanwhile are dropped).

        Raises:
            RuntimeError: the command failed.
        """
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.time() + timeout_s
        while True:
            msg = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.time())))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expression: str) -> Any:
        """Evaluate JavaScript in the page (promises awaited) and return its JSON value."""
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error: {res['exceptionDetails'].get('text')} in {expression[:200]}")
        return res.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def wait_for(self, expression: str, timeout_s: float = 60, interval_s: float = 0.25) -> Any:
        """Poll ``expression`` until it is truthy; returns its value.

        Raises:
            TimeoutError: still falsy after ``timeout_s`` (the message has the page's text, cut).
        """
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                value = self.eval(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            time.sleep(interval_s)
        text = self.eval("document.body ? document.body.innerText : ''") or ""
        raise TimeoutError(f"not true after {timeout_s} s: {expression[:120]}; page text: {text[:1500]}")

    def click_text(self, text: str, selector: str = "button, [role=menuitem], a") -> bool:
        """Click, with real mouse events (menus that open on pointer-down need them), the first visible element
        matching ``selector`` whose trimmed text or accessible label (``aria-label``, or screen-reader-only text)
        is ``text``. Returns False when there is none."""
        js = f"""(() => {{
            const want = {json.dumps(text)};
            const els = [...document.querySelectorAll({json.dumps(selector)})];
            const el = els.find(e => {{
                const r = e.getBoundingClientRect();
                if (r.width === 0 || r.height === 0) return false;
                return (e.innerText || '').trim() === want || e.getAttribute('aria-label') === want
                    || (e.textContent || '').trim() === want;
            }});
            if (!el) return null;
            el.scrollIntoView({{block: 'center'}});
            const r = el.getBoundingClientRect();
            return [r.left + r.width / 2, r.top + r.height / 2]; }})()"""
        at = self.eval(js)
        if not at:
            return False
        x, y = at
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                      clickCount=0 if kind == "mouseMoved" else 1)
        return True

    def screenshot(self, path: str | Path) -> Path:
        """A PNG of the viewport."""
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self._ws.close()
        except Exception:  # noqa: BLE001 - closing a dead socket
            pass
        stop_process(self.proc, 10, group=True)  # Chromium's renderer and GPU processes too
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
