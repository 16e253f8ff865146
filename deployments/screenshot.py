"""A look at a batch as a user sees it: a headless Chromium screenshot of its flow run page in the Prefect UI,
on its Artifacts tab.

An optional check (CONTRIBUTING.md), not a test: it needs Chromium (`apt-get install -y chromium`).

    python -m prefect_restful_etl.deployments.screenshot BATCH_ID --out batch.png [--tab Artifacts]
    python -m prefect_restful_etl.deployments.screenshot --artifact crm-to-accounting-demo-audit --out audit.png
    python -m prefect_restful_etl.deployments.screenshot --artifact crm-to-accounting-demo-audit --history --out h.png

The UI's address is PREFECT_API_URL without its `/api`. The page picks its tab only once the run has
loaded (a `?tab=` link falls back to Logs), so the script drives Chromium over its DevTools protocol: open
the page, wait for the tab, click it, wait for its content, capture. Chromium runs on loopback with a fresh
profile in a temporary folder, no sync, updates or background traffic, and is stopped by its PID.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

_BROWSERS = ("chromium", "chromium-browser", "google-chrome")
_QUIET = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
          "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]
# Click the tab whose label is the wanted one; true once clicked
_CLICK_TAB = """(() => {
  const tab = [...document.querySelectorAll('button, a, [role=tab], li')]
    .find(e => e.textContent.trim() === %s && e.offsetParent !== null);
  if (!tab) return false;
  tab.click();
  return true;
})()"""


class _DevTools:
    """A minimal DevTools protocol session: send a command, wait for its own answer."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket, self.ids = socket, itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=30))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_stable(self, timeout: float, quiet: float = 1.0) -> None:
        """Until the page's text has not changed for `quiet` seconds: the app has fetched and drawn its data."""
        deadline, last, since = time.monotonic() + timeout, None, time.monotonic()
        while time.monotonic() < deadline:
            text = self.evaluate("document.readyState + ':' + document.body.innerText")
            if text != last or text in ("complete:", "interactive:", "loading:"):  # nothing drawn yet
                last, since = text, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.2)

    def wait_for(self, expression: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := self.evaluate(expression):
                return value
            time.sleep(0.25)
        raise SystemExit(f"the page never satisfied: {expression[:80]}")


def ui_url(api_url: str, batch_id: str) -> str:
    return f"{api_url.rstrip('/').removesuffix('/api')}/runs/flow-run/{batch_id}"


def artifact_url(api_url: str, key: str, history: bool = False) -> str:
    """The latest artifact under `key` (its table or text), or the key's page: every batch's, newest first."""
    base = api_url.rstrip("/").removesuffix("/api")
    if history:
        return f"{base}/artifacts/key/{key}"
    body = {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1}
    found = httpx.post(f"{api_url.rstrip('/')}/artifacts/filter", json=body, timeout=10).raise_for_status().json()
    if not found:
        raise SystemExit(f"no artifact with key {key!r}")
    return f"{base}/artifacts/artifact/{found[0]['id']}"


def browser() -> str:
    for name in _BROWSERS:
        if found := shutil.which(name):
            return found
    raise SystemExit("no Chromium on PATH: `apt-get update && apt-get install -y chromium`")


def _page_socket(profile: Path, process: subprocess.Popen[bytes], timeout: float) -> str:
    """Chromium writes its DevTools port to the profile once it listens; then ask it for the page's socket."""
    port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + timeout
    while not port_file.exists() or not port_file.read_text().strip():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("chromium did not open its DevTools port")
        time.sleep(0.1)
    port = port_file.read_text().split()[0]
    pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
    return next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")


def screenshot(url: str, out: Path, *, tab: str | None = "Artifacts", expect: str | None = None, width: int = 1440,
               height: int = 1800, timeout: float = 60.0) -> Path:
    """Open `url`, click `tab` (if any), wait until the page shows `expect` (text), and save a PNG to `out`."""
    # ignore_cleanup_errors: Chromium's helpers may still be writing the profile as it is removed
    with tempfile.TemporaryDirectory(prefix="restful-etl-chromium-", ignore_cleanup_errors=True) as folder:
        profile = Path(folder)
        command = [browser(), *_QUIET, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]
        # its own process group, so stopping it by its PID's group also ends its renderer and helper processes
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                   env={**os.environ, "TMPDIR": folder})  # its scratch files go with the profile
        try:
            with connect(_page_socket(profile, process, timeout), max_size=None) as socket:
                tools = _DevTools(socket)
                tools.call("Page.enable")
                tools.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                           mobile=False)
                tools.call("Page.navigate", url=url)
                if tab:
                    tools.wait_for(_CLICK_TAB % json.dumps(tab), timeout)
                if expect:
                    tools.wait_for(f"document.body.innerText.includes({json.dumps(expect)})", timeout)
                tools.wait_stable(timeout)
                png = tools.call("Page.captureScreenshot", format="png")["data"]
        finally:
            _stop(process)
    out.write_bytes(base64.b64decode(png))
    return out.resolve()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("batch_id", nargs="?", help="the batch (flow run) whose page to capture")
    parser.add_argument("--artifact", help="capture the latest artifact of this key instead (crm-to-accounting-demo-audit)")
    parser.add_argument("--history", action="store_true", help="with --artifact: the key's page, one entry per batch")
    parser.add_argument("--out", type=Path, default=Path("batch.png"))
    parser.add_argument("--tab", default="Artifacts", help="the flow run page's tab (Artifacts, Logs, Task Runs ...)")
    parser.add_argument("--expect", default=None, help="text to wait for before the capture (an artifact key)")
    parser.add_argument("--api-url", default=os.environ.get("PREFECT_API_URL", ""))
    parser.add_argument("--width", type=int, default=2200, help="window width in pixels (the audit table is wide)")
    parser.add_argument("--height", type=int, default=1800, help="window height in pixels")
    args = parser.parse_args(argv)
    if not args.api_url:
        parser.error("set PREFECT_API_URL or give --api-url")
    if not (args.batch_id or args.artifact):
        parser.error("give a batch id or --artifact KEY")
    url = artifact_url(args.api_url, args.artifact, args.history) if args.artifact else ui_url(args.api_url, args.batch_id)
    expect = args.expect or args.artifact  # an artifact's page names its key once its data is in
    tab = None if args.artifact else args.tab
    print(screenshot(url, args.out, tab=tab, expect=expect, width=args.width, height=args.height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
