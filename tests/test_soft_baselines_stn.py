"""``soft_baselines.stn``: the spatial transformer's geometry (identity at init, theta,
translation, zoom, gradients, bad arguments), and learning on a small cluttered-MNIST
subset (issue 5): its warp must move, an STN stuck at the identity is just the plain
backbone.
"""

from __future__ import annotations

import math

import pytest
import torch

import soft_baselines
from glimpse.training import load_checkpoint
from soft_baselines.stn import SpatialTransformer, theta_from_params, warp
from soft_baselines.train import SoftTrainConfig, build_model, load_splits, train_soft
from tests.helpers.soft_float32 import rand

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IDENTITY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """STN + SmallCNN on 60x60 cluttered MNIST: 160 batches of 64 (10,240 images, a fifth
    of an epoch), evaluated on the first 2000 test images (``eval_limit``; the 500
    validation images are all kept); returns the metrics and the warps ``theta``
    ``(500, 2, 3)`` of the first 500 validation images under ``best.pt``. The full 10k
    test pass took about as long as 100 training batches (3.5 s per 500 images, measured),
    so the test set is cut, not the training: 120 batches (measured 2026-12-02, seeds
    0/1/2, load ~9 on the 2 cores) left the warp at 0.017/0.015/0.045 from the identity,
    two of three under this test's 0.02."""
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
        eval_limit=2000,
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
    test accuracy, mean |theta - identity| = 0.070 over the first 500 validation images;
    on the first 2000 test images (the fixture's ``eval_limit`` since 2026-12-02, training
    unchanged) 88.85%, warp 0.070 again (val 92.0% both times).
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


# --------------------------------------------------------------------------- STN


def stn_with_random_head(mode: str, seed: int = 0, **kw) -> SpatialTransformer:
    torch.manual_seed(seed)
    m = SpatialTransformer(2, input_size=(12, 20), mode=mode, **kw)
    with torch.no_grad():
        m.fc_theta.weight.normal_(0, 0.3)
    return m


@pytest.mark.parametrize("mode", ["affine", "attention"])
def test_stn_identity_at_init(mode: str) -> None:
    m = SpatialTransformer(2, input_size=(12, 20), mode=mode)
    x = rand(3, 2, 12, 20)
    warped, theta = m.transform(x)
    eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 2, 3)
    torch.testing.assert_close(theta, eye)
    torch.testing.assert_close(warped, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(m.last_theta, eye)
    assert not m.last_theta.requires_grad


def test_stn_attention_mode_has_no_shear_and_equal_scales() -> None:
    m = stn_with_random_head("attention")
    theta = m.theta(rand(4, 2, 12, 20))
    assert theta.shape == (4, 2, 3)
    assert torch.equal(theta[:, 0, 1], torch.zeros(4)) and torch.equal(
        theta[:, 1, 0], torch.zeros(4)
    )
    assert torch.equal(theta[:, 0, 0], theta[:, 1, 1])
    assert not torch.allclose(theta[:, :, 2], torch.zeros(4, 2))  # translations do vary


def test_theta_from_params() -> None:
    p = torch.tensor([[0.5, 0.1, -0.2]])
    expected = torch.tensor([[[0.5, 0.0, 0.1], [0.0, 0.5, -0.2]]])
    torch.testing.assert_close(theta_from_params(p, "attention"), expected)
    torch.testing.assert_close(
        theta_from_params(torch.arange(6.0)[None], "affine")[0, 1, 2], torch.tensor(5.0)
    )
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        theta_from_params(torch.zeros(1, 6), "attention")
    with pytest.raises(ValueError, match="mode"):
        theta_from_params(p, "projective")


@pytest.mark.parametrize(("dx", "dy"), [(3, 0), (0, 2), (-4, 1), (5, -3)])
def test_stn_translation_moves_a_dot(dx: int, dy: int) -> None:
    h, w, r, c = 12, 20, 5, 9
    x = torch.zeros(1, 1, h, w)
    x[0, 0, r, c] = 1.0
    # Output pixel (i, j) reads input pixel (i + dy, j + dx): the dot moves by (-dy, -dx).
    theta = torch.tensor([[[1.0, 0.0, 2 * dx / w], [0.0, 1.0, 2 * dy / h]]])
    y = warp(x, theta)
    expected = torch.zeros_like(x)
    expected[0, 0, r - dy, c - dx] = 1.0
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=0)


def test_stn_module_uses_its_regressed_theta() -> None:
    m = SpatialTransformer(1, input_size=(12, 20), mode="attention")
    with torch.no_grad():
        m.fc_theta.bias.copy_(torch.tensor([1.0, 2 * 3 / 20, 0.0]))  # shift 3 pixels
    x = torch.zeros(2, 1, 12, 20)
    x[:, 0, 4, 10] = 1.0
    y = m(x)
    assert y[:, 0].flatten(1).argmax(1).tolist() == [4 * 20 + 7] * 2


def test_stn_zoom_and_output_size() -> None:
    h, w = 12, 20
    x = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)
    # Half-scale, centred: a 6x10 output covers the central half of the image pixel for pixel.
    y = warp(x, torch.tensor([[[0.5, 0, 0], [0, 0.5, 0]]]), output_size=(6, 10))
    torch.testing.assert_close(y, x[:, :, 3:9, 5:15])
    m = SpatialTransformer(1, input_size=(h, w), output_size=(6, 10))
    assert m(x).shape == (1, 1, 6, 10)


def test_stn_any_size_when_input_size_is_none() -> None:
    m = SpatialTransformer(3, mode="attention")
    for shape in [(2, 3, 9, 31), (1, 3, 1, 1), (2, 3, 100, 60)]:
        x = rand(*shape)
        # Grid coordinates round-trip through [-1, 1]: float32 error grows with the size.
        torch.testing.assert_close(m(x), x, atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", ["affine", "attention"])
def test_stn_gradients(mode: str) -> None:
    m = stn_with_random_head(mode)
    x = rand(2, 2, 12, 20).requires_grad_()
    (m(x) * rand(2, 2, 12, 20, seed=5)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_stn_gradients_reach_theta_at_init() -> None:
    m = SpatialTransformer(1, input_size=(12, 20))
    x = rand(2, 1, 12, 20)
    (m(x) * rand(2, 1, 12, 20, seed=3)).sum().backward()
    assert m.fc_theta.bias.grad.abs().sum() > 0 and m.fc_theta.weight.grad.abs().sum() > 0


def test_stn_float64_determinism_and_autocast() -> None:
    a = stn_with_random_head("affine", seed=2).double()
    b = stn_with_random_head("affine", seed=2).double()
    x = rand(2, 2, 12, 20, dtype=torch.float64)
    ya = a(x)
    assert ya.dtype == torch.float64
    torch.testing.assert_close(ya, b(x), rtol=0, atol=0)
    m = stn_with_random_head("affine", seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(rand(2, 2, 12, 20))
    assert y.shape == (2, 2, 12, 20) and torch.isfinite(y).all()


def test_stn_bad_args_and_inputs_raise() -> None:
    with pytest.raises(ValueError, match="mode"):
        SpatialTransformer(1, mode="similarity")
    with pytest.raises(ValueError, match="in_channels"):
        SpatialTransformer(0)
    with pytest.raises(ValueError, match="input_size"):
        SpatialTransformer(1, input_size=(28,))
    with pytest.raises(ValueError, match="output_size"):
        SpatialTransformer(1, output_size=(0, 5))
    with pytest.raises(ValueError, match="loc_hidden"):
        SpatialTransformer(1, loc_hidden=0)
    m = SpatialTransformer(1, input_size=(12, 20))
    with pytest.raises(ValueError, match=r"input_size=\(12, 20\)"):
        m(rand(1, 1, 20, 12))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        m(rand(1, 2, 12, 20))
    with pytest.raises(ValueError, match="theta"):
        warp(rand(2, 1, 4, 4), torch.zeros(1, 2, 3))


def test_stn_via_registry() -> None:
    m = soft_baselines.create("stn", 3, input_size=(10, 14), mode="attention")
    assert isinstance(m, SpatialTransformer)
    assert m(rand(2, 3, 10, 14)).shape == (2, 3, 10, 14)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_stn_cuda_and_autocast() -> None:
    m = stn_with_random_head("affine").cuda()
    x = rand(2, 2, 12, 20).cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        y = m(x)
    assert y.device.type == "cuda" and y.shape == x.shape and torch.isfinite(y).all()
    assert math.isfinite(m.last_theta.float().sum().item())
