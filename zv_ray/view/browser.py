"""Headless Chromium driven over the DevTools protocol: open the viewer, screenshot its 3D canvas.

    with HeadlessChromium("http://127.0.0.1:8080") as browser:
        image = browser.canvas_screenshot()   # [H, W, 3] uint8, the WebGL canvas only

Software WebGL (SwiftShader) renders the three.js canvas without a GPU or a display. `zv-ray view
--screenshot` and the browser tests use this; Debian's package: `bash scripts/setup_browser.sh`.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
FLAGS = (
    "--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--remote-debugging-port=0", "--remote-allow-origins=*",
)
# A pixel counts as content when its RGB differs from the most common colour by more than this (sum over channels).
_CONTENT_DIFF = 24
# Share of the canvas kept around its centre when looking for content: leaves out the corner axes gizmo.
_CENTRE = 0.6
# Content fractions of two polls closer than this: nothing is loading any more.
_SETTLED = 0.002
# The largest canvas is three.js's (viser also keeps a 0 x 0 one); the notifications (e.g. "software WebGL")
# are hidden so screenshots show the scene and the panel only.
_CANVAS_RECT_JS = """(() => {
  if (!document.getElementById('zv-hide')) {
    const style = document.createElement('style');
    style.id = 'zv-hide';
    style.textContent = '.mantine-Notifications-root { display: none !important; }';
    document.head.appendChild(style);
  }
  const canvases = [...document.querySelectorAll('canvas')].filter(c => c.width * c.height > 0);
  if (!canvases.length) return null;
  const c = canvases.reduce((a, b) => (a.width * a.height >= b.width * b.height ? a : b));
  const r = c.getBoundingClientRect();
  return [r.left, r.top, r.width, r.height];
})()"""


class BrowserError(RuntimeError):
    """Chromium is missing, did not start, or did not answer."""


def find_chromium() -> str | None:
    for path in CHROMIUM_PATHS:
        if Path(path).is_file():
            return path
    return shutil.which("chromium")


def content_fraction(image: np.ndarray) -> float:  # image [H, W, 3] uint8
    """Share of pixels around the centre that differ clearly from the most common (background) colour:
    0 for a blank canvas."""
    h, w = image.shape[:2]
    dy, dx = int(h * (1 - _CENTRE) / 2), int(w * (1 - _CENTRE) / 2)
    flat = image[dy : h - dy, dx : w - dx].reshape(-1, 3).astype(np.int32)
    colors, counts = np.unique(flat, axis=0, return_counts=True)
    background = colors[counts.argmax()]
    return float((np.abs(flat - background).sum(axis=1) > _CONTENT_DIFF).mean())


def wait_for_client(server, timeout: float = 30.0) -> None:
    """Until a browser's viser client is connected (viser counts it once its first camera message arrives)."""
    deadline = time.monotonic() + timeout
    while not server.get_clients():
        if time.monotonic() > deadline:
            raise BrowserError(f"no viewer client connected within {timeout:.0f} s")
        time.sleep(0.1)


class HeadlessChromium:
    """One headless Chromium showing `url`, with a DevTools websocket to its page."""

    def __init__(self, url: str, width: int = 1280, height: int = 800, timeout: float = 30.0) -> None:
        self.url, self.size, self.timeout = url, (width, height), timeout
        self._ids = itertools.count(1)

    def __enter__(self) -> "HeadlessChromium":
        from websockets.sync.client import connect

        chromium = find_chromium()
        if chromium is None:
            raise BrowserError("Chromium not found at /usr/bin/chromium: install it with bash scripts/setup_browser.sh")
        self._profile = Path(tempfile.mkdtemp(prefix="zv-chromium-"))
        self._proc = subprocess.Popen(
            [chromium, *FLAGS, f"--user-data-dir={self._profile}", f"--window-size={self.size[0]},{self.size[1]}", self.url],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            port = self._devtools_port()
            page = self._page_target(port)
            self._ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=self.timeout)
            # The window size includes (invisible) browser chrome: pin the page's viewport instead.
            width, height = self.size
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        except BaseException:
            self._shutdown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._ws.close()
        self._shutdown()

    def _shutdown(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def _devtools_port(self) -> int:
        """Chromium writes the port it picked (--remote-debugging-port=0) into the profile once it listens."""
        marker = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace").strip().splitlines()
                raise BrowserError(f"Chromium exited with code {self._proc.returncode}: {err[-1] if err else 'no output'}")
            if marker.is_file() and (lines := marker.read_text().split()):
                return int(lines[0])
            time.sleep(0.1)
        raise BrowserError(f"Chromium did not open its DevTools port within {self.timeout:.0f} s")

    def _page_target(self, port: int) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as reply:
            pages = [t for t in json.load(reply) if t.get("type") == "page"]
        if not pages:
            raise BrowserError("Chromium shows no page")
        return pages[0]

    def call(self, method: str, **params: object) -> dict:
        """One DevTools command; events arriving meanwhile are dropped."""
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._ws.recv(timeout=self.timeout))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply["result"]

    def evaluate(self, expression: str) -> object:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def screenshot(self, clip: tuple[float, float, float, float] | None = None) -> np.ndarray:  # -> [H, W, 3] uint8
        """The page (or the clip x, y, width, height in CSS pixels) as RGB."""
        from PIL import Image

        params: dict = {"format": "png"}
        if clip is not None:
            params["clip"] = dict(zip(("x", "y", "width", "height"), clip), scale=1)
        data = base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def canvas_rect(self) -> tuple[float, float, float, float] | None:
        """The 3D canvas's x, y, width, height in CSS pixels (None while the client is loading); hides notifications."""
        rect = self.evaluate(_CANVAS_RECT_JS)
        return tuple(rect) if rect else None

    def canvas_screenshot(self) -> np.ndarray | None:  # -> [H, W, 3] uint8
        """Only the 3D canvas, without the control panel (None while the client is loading)."""
        rect = self.canvas_rect()
        return self.screenshot(rect) if rect else None

    def wait_for_content(self, min_fraction: float = 0.01, timeout: float | None = None) -> tuple[np.ndarray, float]:
        """Poll the canvas until more than `min_fraction` of its centre is content and stays the same between
        two polls (the scene has loaded), or the timeout passes: (last canvas image, its content fraction)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        last = -1.0
        while True:
            image = self.canvas_screenshot()
            fraction = content_fraction(image) if image is not None else 0.0
            settled = fraction > min_fraction and abs(fraction - last) < _SETTLED
            if settled or time.monotonic() > deadline:
                if image is None:
                    raise BrowserError(f"the page at {self.url} shows no canvas")
                return image, fraction
            last = fraction
            time.sleep(0.3)
