"""A small trained RAM run with trajectory playback, and the shape of its frames."""

from __future__ import annotations

from pathlib import Path

PLAYBACK = 4  # validation images in the logged trajectories
STEPS = 6  # MNIST task: T = 6 glimpses
CELL = 28 * 4  # 28x28 upscaled by 4
NCOLS = 3  # episodes per row in TensorBoard: 3 * 114 + 2 = 344 <= 350 px (not scaled down)
ROWS = 2  # four episodes: 3 + 1
FRAME_SHAPE = (ROWS * (CELL + 2) + 2, NCOLS * (CELL + 2) + 2, 3)  # 2-pixel padding


def make_small_run(root: Path, data_root: Path, name: str = "ram-small") -> Path:
    """Train RAM for 2 tiny batches on MNIST; the run folder holds events with playback."""
    from agents.config import HardTrainConfig
    from agents.train import train_reinforce

    cfg = HardTrainConfig(
        task="mnist",
        epochs=1,
        max_batches_per_epoch=2,
        batch_size=16,
        val_size=200,
        eval_batch_size=1000,
        playback=PLAYBACK,
        threads=1,
        data_root=str(data_root),
        runs_root=str(root),
        run_name=name,
    )
    train_reinforce(cfg)
    return root / name
