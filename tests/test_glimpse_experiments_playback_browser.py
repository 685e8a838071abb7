"""The glimpse playback in a real browser: a real TensorBoard server on localhost against a
small generated run, loaded in headless Chromium, driven over the Chrome DevTools protocol.

Checks that TensorBoard's Images panel shows both trajectory cards with their images loaded
(found by piercing the dashboard's shadow DOM), that each displayed image is byte for byte
the one in the event file, and that the screenshot shows the trajectory overlay colours.
The screenshot is saved to ``tests/artifacts/tensorboard_playback.png`` (and copied to
``docs/img/`` with ``GLIMPSE_UPDATE_DOCS_IMG=1``).

Part of the default run (about 15 s: a TensorBoard and a Chromium start). Needs Debian's
``chromium`` (``.ci/run`` installs it with apt; by hand: ``apt-get install chromium``) and
``websocket-client`` (in the ``dev`` extra). Skipped, with the reason, without them; under
``CI=true`` on a machine that has ``apt-get`` (so ``.ci/run`` could install chromium), a
missing browser is a failure instead.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glimpse.experiments.playback import launch_tensorboard
from glimpse.viz import DEFAULT_COLORS
from tests.helpers.playback import FRAME_SHAPE, make_small_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts"

# Every <img> of the page, through open shadow roots (TensorBoard's Polymer dashboards).
_FIND_IMAGES = r"""(() => {
  const out = [];
  const walk = (root) => root.querySelectorAll('*').forEach((el) => {
    if (el.tagName === 'IMG') out.push(el);
    if (el.shadowRoot) walk(el.shadowRoot);
  });
  walk(document);
  return JSON.stringify(out.map((i) => ({src: i.src, w: i.naturalWidth, h: i.naturalHeight,
    complete: i.complete, shown: i.getBoundingClientRect().width > 0})));
})()"""


def _need(what: str, hint: str):
    if os.environ.get("CI") and shutil.which("apt-get"):
        pytest.fail(f"{what} not available although apt-get is (.ci/run installs it): {hint}")
    pytest.skip(f"{what} not available: {hint}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


class DevTools:
    """A minimal Chrome DevTools protocol client for one page (websocket-client)."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60)
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def close(self) -> None:
        self.ws.close()


def _start_chromium(exe: str, profile: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [
            exe,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "--window-size=1280,900",
            "about:blank",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stderr.readline()
        m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("chromium did not start its DevTools server")


def test_tensorboard_shows_the_trajectory_in_chromium(tmp_path: Path, data_root: Path) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        _need("chromium", "apt-get install -y chromium")
    try:
        import websocket  # noqa: F401
    except ImportError:
        _need("websocket-client", 'pip install -e ".[dev]"')

    run_dir = make_small_run(tmp_path / "runs", data_root)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    acc.Reload()
    logged = {tag: acc.Images(tag)[-1].encoded_image_string for tag in acc.Tags()["images"]}
    assert len(logged) == 2

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    tb = launch_tensorboard(
        run_dir.parent, port, "127.0.0.1", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    chrome = None
    try:
        # TensorBoard's data API lists both trajectory tags of the run
        deadline, tags = time.time() + 90, {}
        while time.time() < deadline and len(tags.get(run_dir.name, {})) < 2:
            try:
                tags = json.loads(_get(f"{base}/data/plugin/images/tags"))
            except OSError:
                pass
            time.sleep(1)
        assert set(tags[run_dir.name]) == set(logged)

        chrome, cdp_port = _start_chromium(exe, tmp_path / "profile")
        targets = json.loads(_get(f"http://127.0.0.1:{cdp_port}/json/list"))
        page = DevTools(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        page.call("Page.enable")
        page.call("Page.navigate", url=f"{base}/#images")
        deadline, shown = time.time() + 90, []
        while time.time() < deadline:
            res = page.call("Runtime.evaluate", expression=_FIND_IMAGES, returnByValue=True)
            imgs = json.loads(res["result"]["value"])
            shown = [
                i
                for i in imgs
                if "individualImage" in i["src"] and i["complete"] and i["w"] > 0 and i["shown"]
            ]
            if len(shown) >= 2:
                break
            time.sleep(1)
        time.sleep(1)  # let the GIF paint
        shot = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
        page.close()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "tensorboard_playback.png").write_bytes(shot)
        if os.environ.get("GLIMPSE_UPDATE_DOCS_IMG"):
            (REPO / "docs" / "img").mkdir(parents=True, exist_ok=True)
            (REPO / "docs" / "img" / "tensorboard_playback.png").write_bytes(shot)

        # Both cards (animation and per-step frames) display an image of the frames' size,
        # and each is exactly what the run logged.
        assert len(shown) == 2, f"images panel shows {len(shown)} loaded images: {shown}"
        served = set()
        for img in shown:
            assert (img["h"], img["w"]) == FRAME_SHAPE[:2]
            served.add(_get(img["src"]))
        # (the animation, and the step card's default: its last step, frame T-1)
        assert served == set(logged.values())

        # The screenshot shows the trajectory: overlay colours only our frames contain.
        pix = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)
        assert pix.std() > 10  # not blank
        near = lambda c: (np.abs(pix - np.array(c)).sum(-1) < 60).sum()  # noqa: E731
        assert near(DEFAULT_COLORS["dot"]) > 20, "no fixation dots visible"
        assert near(DEFAULT_COLORS["box"]) > 20, "no glimpse boxes visible"
    finally:
        if chrome is not None:
            chrome.terminate()
            chrome.wait(timeout=30)
        tb.terminate()
        tb.wait(timeout=30)
