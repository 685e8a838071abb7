"""The spatial transformer front end learns on a small cluttered-MNIST subset (issue 5)."""

from __future__ import annotations

import pytest

from soft_baselines.train import SoftTrainConfig, train_soft

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_stn_smallcnn_learns_cluttered60(data_root, tmp_path):
    """STN + SmallCNN on 60x60 cluttered MNIST: 160 batches of 64 (10,240 images, a fifth
    of an epoch), evaluated on the full 10k test set. Chance is 10%; seed 0 measured
    91.6% (docs/RESULTS.md), so 80% leaves room for platform differences while a
    transformer or backbone that does not learn fails."""
    cfg = SoftTrainConfig(
        module="stn",
        dataset="cluttered60",
        data_root=str(data_root),
        runs_root=str(tmp_path),
        run_name="stn-learn",
        device="cpu",
        widths=(16, 32, 64),
        epochs=1,
        batch_size=64,
        max_batches_per_epoch=160,
        lr=3e-3,
        log_every=80,
        val_size=500,
        eval_batch_size=1000,
        log_images=0,
        seed=0,
    )
    result = train_soft(cfg)
    assert result["test_accuracy"] > 0.80, result
