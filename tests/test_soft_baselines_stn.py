"""The spatial transformer front end learns on a small cluttered-MNIST subset (issue 5),
and its warp must move: an STN stuck at the identity is just the plain backbone."""

from __future__ import annotations

import pytest
import torch

from glimpse.training import load_checkpoint
from soft_baselines.train import SoftTrainConfig, build_model, load_splits, train_soft

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IDENTITY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """STN + SmallCNN on 60x60 cluttered MNIST: 160 batches of 64 (10,240 images, a fifth
    of an epoch), evaluated on the full 10k test set; returns the metrics and the warps
    ``theta`` ``(500, 2, 3)`` of the first 500 validation images under ``best.pt``."""
    root = tmp_path_factory.mktemp("stn")
    cfg = SoftTrainConfig(
        module="stn",
        dataset="cluttered60",
        data_root=str(data_root),
        runs_root=str(root),
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
    val = load_splits(cfg, torch.device("cpu"))["val"]
    model = build_model(cfg, tuple(val.images.shape[1:]))
    model.load_state_dict(load_checkpoint(root / "stn-learn" / "best.pt")["model"])
    model.eval()
    with torch.no_grad():
        _, theta = model.stn.transform(val.images[:500].float() / 255)
    return result, theta


def test_stn_smallcnn_learns_cluttered60_and_its_warp_moves(trained):
    """Measured with seed 0 (2026-12-01, 2-core CPU VM shared with other jobs): 91.21%
    test accuracy, mean |theta - identity| = 0.070 over the first 500 validation images.
    Chance is 10%; the transformer starts exactly at the identity (zero last layer), so a
    warp that never learns fails the second assertion whatever the backbone does."""
    result, theta = trained
    assert result["test_accuracy"] > 0.80, result
    assert (theta - IDENTITY).abs().mean() > 0.02


@pytest.mark.xfail(
    strict=True,
    reason="known (issue 16): at this budget the STN learns one global offset, not a warp "
    "per image: the translation's sd over images was 0.004-0.006 (measured), while the "
    "digits' centres spread over about +-0.5; to be fixed with the STN paper's clutter "
    "recipe in a later session",
)
def test_stn_warp_depends_on_the_image(trained):
    """An attending transformer moves to where the digit is, which differs per image."""
    _, theta = trained
    assert theta[:, :, 2].std(0).min() > 0.05
