"""Watch a hard-attention run's glimpse trajectories: ``python scripts/playback.py --help``.

Prints the TensorBoard command for the run folder (``--launch`` starts it), and with
``--export FILE.gif`` / ``FILE.mp4`` replays chosen test images through the run's best
checkpoint and writes the episodes. Examples::

    python scripts/playback.py runs/ram-mnist-s0-1700000000
    python scripts/playback.py runs/ram-mnist-s0-1700000000 --launch --port 6006
    python scripts/playback.py runs/ram-mnist-s0-1700000000 --export ram.gif --indices 0 1 2 3
    python scripts/playback.py runs/ram-mnist-s0-1700000000 --export ram.mp4  # imageio-ffmpeg
"""

from __future__ import annotations

from glimpse.experiments.playback import PlaybackConfig, playback
from glimpse.training import cli_main, parse_config


def main(args: list[str] | None = None) -> None:
    cfg = parse_config(PlaybackConfig, args, description=__doc__)
    playback(cfg)


if __name__ == "__main__":
    cli_main(main)
