"""The glimpse playback in a real browser: a real TensorBoard server on localhost against a
small generated run, loaded in headless Chromium, driven over the Chrome DevTools protocol.

Checks that TensorBoard's Images panel shows both trajectory cards with their images loaded
(found by piercing the dashboard's shadow DOM), each displayed at a legible size (every
28x28 episode at least 112 CSS pixels wide), that each displayed image is byte for byte
the one in the event file, and that the screenshot shows the trajectory overlay colours;
and the same for a tiny soft (CBAM) run's ``eval/attention/gradcam`` and
``eval/attention/module`` overlays. The screenshots are saved to
``tests/artifacts/tensorboard_playback.png`` and ``tensorboard_soft_attention.png`` (and
copied to ``docs/img/`` with ``GLIMPSE_UPDATE_DOCS_IMG=1``).

Part of the default run (about 30 s: two TensorBoard and Chromium starts). Needs Debian's
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
from glimpse.viz import DEFAULT_COLORS, MIN_SHORT_SIDE
from tests.helpers.playback import CELL, FRAME_SHAPE, make_small_run

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
    complete: i.complete, shown: i.getBoundingClientRect().width > 0,
    dw: i.getBoundingClientRect().width})));
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


def _browser() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        _need("chromium", "apt-get install -y chromium")
    try:
        import websocket  # noqa: F401
    except ImportError:
        _need("websocket-client", 'pip install -e ".[dev]"')
    return exe


def _logged_images(run_dir: Path) -> dict[str, bytes]:
    """Tag -> the last encoded image of that tag in the run's event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    acc.Reload()
    return {tag: acc.Images(tag)[-1].encoded_image_string for tag in acc.Tags()["images"]}


def _images_panel(
    exe: str, run_dir: Path, tags: set[str], tmp_path: Path, screenshot: str
) -> tuple[list[dict], bytes]:
    """Serve ``run_dir``'s folder with a real TensorBoard, wait until its data API lists
    ``tags`` for the run, open the Images panel in headless Chromium, and return the loaded,
    displayed images (``src``, natural ``w`` x ``h``, displayed width ``dw``) and a PNG
    screenshot (also saved to ``tests/artifacts/<screenshot>``)."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    tb = launch_tensorboard(
        run_dir.parent, port, "127.0.0.1", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    chrome = None
    try:
        deadline, listed = time.time() + 90, {}
        while time.time() < deadline and set(listed.get(run_dir.name, {})) != tags:
            try:
                listed = json.loads(_get(f"{base}/data/plugin/images/tags"))
            except OSError:
                pass
            time.sleep(1)
        assert set(listed[run_dir.name]) == tags

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
            if len(shown) >= len(tags):
                break
            time.sleep(1)
        time.sleep(1)  # let the GIF paint
        shot = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
        page.close()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / screenshot).write_bytes(shot)
        if os.environ.get("GLIMPSE_UPDATE_DOCS_IMG"):
            (REPO / "docs" / "img").mkdir(parents=True, exist_ok=True)
            (REPO / "docs" / "img" / screenshot).write_bytes(shot)
        served = [dict(i, data=_get(i["src"])) for i in shown]
        return served, shot
    finally:
        if chrome is not None:
            chrome.terminate()
            chrome.wait(timeout=30)
        tb.terminate()
        tb.wait(timeout=30)


def test_tensorboard_shows_the_trajectory_in_chromium(tmp_path: Path, data_root: Path) -> None:
    exe = _browser()
    run_dir = make_small_run(tmp_path / "runs", data_root)
    logged = _logged_images(run_dir)
    assert len(logged) == 2
    shown, shot = _images_panel(exe, run_dir, set(logged), tmp_path, "tensorboard_playback.png")

    # Both cards (animation and per-step frames) display an image of the frames' size,
    # and each is exactly what the run logged.
    assert len(shown) == 2, f"images panel shows {len(shown)} loaded images: {shown}"
    for img in shown:
        assert (img["h"], img["w"]) == FRAME_SHAPE[:2]
        # legible (issue 18: a 28x28 frame was shown ~85 px wide): the page does not
        # scale the tiled frames down, so every 28x28 episode is 112 CSS pixels wide
        assert img["dw"] >= img["w"] and CELL >= MIN_SHORT_SIDE, img
    # (the animation, and the step card's default: its last step, frame T-1)
    assert {img["data"] for img in shown} == set(logged.values())

    # The screenshot shows the trajectory: overlay colours only our frames contain.
    pix = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)
    assert pix.std() > 10  # not blank
    near = lambda c: (np.abs(pix - np.array(c)).sum(-1) < 60).sum()  # noqa: E731
    assert near(DEFAULT_COLORS["dot"]) > 20, "no fixation dots visible"
    assert near(DEFAULT_COLORS["box"]) > 20, "no glimpse boxes visible"


def test_tensorboard_shows_the_soft_attention_overlays_in_chromium(
    tmp_path: Path, data_root: Path
) -> None:
    """A tiny CBAM run (one epoch of two batches) logs Grad-CAM and CBAM's own spatial map
    over validation images; both show in the Images panel as logged, tinted by the map."""
    from soft_baselines.train import SoftTrainConfig, train_soft

    exe = _browser()
    cfg = SoftTrainConfig(
        module="cbam",
        dataset="mnist",
        widths=(8, 16),
        insert_after=("stage2",),
        epochs=1,
        batch_size=16,
        max_batches_per_epoch=2,
        val_size=100,
        eval_limit=100,
        eval_batch_size=100,
        log_images=4,
        data_root=str(data_root),
        runs_root=str(tmp_path / "runs"),
        run_name="cbam-small",
        device="cpu",
        threads=1,
    )
    train_soft(cfg)
    run_dir = tmp_path / "runs" / "cbam-small"
    logged = _logged_images(run_dir)
    tags = {"eval/attention/gradcam", "eval/attention/module"}
    assert set(logged) == tags
    shown, shot = _images_panel(exe, run_dir, tags, tmp_path, "tensorboard_soft_attention.png")
    assert len(shown) == 2, f"images panel shows {len(shown)} loaded images: {shown}"
    # four 28x28 images upscaled to 112 pixels, three per row, 2-pixel padding; shown at
    # full size (not scaled down: legible)
    grid = (2 * (MIN_SHORT_SIDE + 2) + 2, 3 * (MIN_SHORT_SIDE + 2) + 2)
    for img in shown:
        assert (img["h"], img["w"]) == grid and img["dw"] >= img["w"], img
    assert {img["data"] for img in shown} == set(logged.values())
    # the maps are drawn: pixels blended towards overlay_map's orange
    pix = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)
    r, g, b = pix[..., 0], pix[..., 1], pix[..., 2]
    assert ((r - b > 80) & (g > b) & (r > g)).sum() > 100, "no attention overlay visible"
