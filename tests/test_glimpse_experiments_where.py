"""``glimpse.experiments.where``: one API for where hard agents and soft models look.

Constructed cases with known answers (a hard agent forced onto the box, maps wholly inside
or outside), and registry-wide coverage: every agent kind and every soft module the trainer
accepts gives maps of the right shape summing to one, or declares that it has none.
"""

from __future__ import annotations

import math

import pytest
import torch

from agents.config import PPOTrainConfig
from agents.dram import DRAM
from agents.parts import PartsNet
from agents.ram import RAM
from agents.sb3 import build_recurrent_ppo
from envs import GlimpseVectorEnv, ImageSource, MDPConfig
from glimpse.attention import fixation_scores, map_scores
from glimpse.experiments.where import Where, where
from glimpse.retina import patch_boxes
from soft_baselines.train import SoftTrainConfig, build_model, valid_modules

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H = W = 24
B = 5
CHANNEL_ONLY = {"cam", "eca", "se", "sk"}  # the blocks that declare no spatial map


def _images(n: int = B, size: tuple[int, int] = (H, W), seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, *size, generator=torch.Generator().manual_seed(seed))


def _check_distribution(m: torch.Tensor, n: int, h: int = H, w: int = W) -> None:
    assert m.shape == (n, h, w) and (m >= 0).all() and torch.isfinite(m).all()
    torch.testing.assert_close(m.sum((1, 2)), torch.ones(n, dtype=m.dtype), rtol=0, atol=1e-5)


def _forced_ram(glimpse_shape, target: tuple[float, float], num_classes: int = 10) -> RAM:
    """A RAM whose location head always says ``target`` (zero weights, atanh bias)."""
    ram = RAM(glimpse_shape, num_classes=num_classes, hidden=16)
    with torch.no_grad():
        ram.locator.weight.zero_()
        ram.locator.bias.copy_(torch.atanh(torch.tensor(target)))
    return ram.eval()


# ------------------------------------------------------------- known answers
def test_a_hard_agent_forced_onto_the_box_hits_it_at_every_step():
    # digit box (26, 26)-(50, 50) of a 60x60 image: its centre (38, 38) is loc 4/15; the
    # first fixation (the image centre, pixel (30, 30)) is inside it too
    mdp = MDPConfig(glimpse_size=8, num_glimpses=5)
    centre = 38 / 60 * 2 - 1
    venv = GlimpseVectorEnv((_images(4, (60, 60)), torch.zeros(4).long()), 4, mdp, shuffle=False)
    ram = _forced_ram(venv.single_observation_space["glimpse"].shape, (centre, centre))
    got = where(ram, venv)
    assert got.kind == "hard" and got.fixations.shape == (4, 5, 2)
    torch.testing.assert_close(got.fixations[:, 1:], torch.full((4, 4, 2), centre))
    digit = torch.tensor([26.0, 26.0, 50.0, 50.0]).expand(4, 4)
    clutter = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).expand(4, 1, 4)
    hits = fixation_scores(got.fixations, digit, 60, 60, clutter)
    assert hits["fixation_in_box"].float().mean(0).tolist() == [1.0] * 5  # per step
    assert not hits["fixation_on_clutter"].any()
    scores = map_scores(got.maps.double(), digit.double(), clutter.double())
    torch.testing.assert_close(scores["mass_in_box"], torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(scores["mass_on_clutter"], torch.zeros(4, dtype=torch.float64))
    assert scores["pointing"].all()
    # a box elsewhere: no fixation, no mass
    away = torch.tensor([0.0, 40.0, 20.0, 60.0]).expand(4, 4)
    assert not fixation_scores(got.fixations, away, 60, 60)["fixation_in_box"].any()
    assert map_scores(got.maps, away)["mass_in_box"].abs().max() < 1e-6
    # the glimpse boxes are the retina's patches: 8 pixels around (38, 38)
    torch.testing.assert_close(got.glimpse_boxes[0, -1, 0], torch.tensor([34.0, 34, 42, 42]))


def test_footprints_finest_and_all_scales_from_known_fixations():
    # one 2-scale 4-pixel glimpse at the centre of a 24x24 image: the finest footprint is
    # uniform on the 4x4 patch; with all scales, half the mass on it and half on the 8x8
    mdp = MDPConfig(glimpse_size=4, num_scales=2, num_glimpses=1)
    venv = GlimpseVectorEnv((_images(1), torch.zeros(1).long()), 1, mdp, shuffle=False)
    ram = _forced_ram(venv.single_observation_space["glimpse"].shape, (0.0, 0.0))
    got = where(ram, venv)
    assert got.map("footprint") is got.maps and got.map("module") is None
    fine, both = got.maps[0], got.maps_all_scales[0]
    assert fine[10:14, 10:14].sum().item() == pytest.approx(1.0)
    assert fine[10:14, 10:14].min().item() == pytest.approx(1 / 16)
    assert both[10:14, 10:14].min().item() == pytest.approx(0.5 / 16 + 0.5 / 64)
    assert both[8:16, 8:16].sum().item() == pytest.approx(1.0)
    assert got.glimpse_boxes.shape == (1, 1, 2, 4)
    with pytest.raises(ValueError, match="map name"):
        got.map("bogus")


def test_where_on_a_tensor_needs_the_mdp_and_matches_the_env():
    mdp = MDPConfig(glimpse_size=4, num_glimpses=3)
    x = _images()
    venv = GlimpseVectorEnv((x, torch.zeros(B).long()), B, mdp, shuffle=False)
    torch.manual_seed(0)
    ram = RAM(venv.single_observation_space["glimpse"].shape, hidden=16).eval()
    a = where(ram, venv)
    b = where(ram, x, mdp=mdp, batch_size=2)  # built here, played two at a time
    # (batches of another size: equal up to float rounding)
    torch.testing.assert_close(a.fixations, b.fixations)
    torch.testing.assert_close(a.maps, b.maps)
    c = where(ram, venv, indices=torch.tensor([3, 1]))
    torch.testing.assert_close(c.fixations, a.fixations[[3, 1]])
    with pytest.raises(ValueError, match="MDPConfig"):
        where(ram, x)
    with pytest.raises(ValueError, match="indices"):
        where(ram, venv, indices=torch.tensor([B]))
    with pytest.raises(ValueError, match="knows hard agents"):
        where(object(), x)


# ------------------------------------------------- registry-wide: hard agents
def _hard_agents():
    mdp = MDPConfig(glimpse_size=4, num_scales=2, num_glimpses=3)
    src = ImageSource(_images(), torch.zeros(B, dtype=torch.long))
    venv = GlimpseVectorEnv(src, B, mdp, shuffle=False)
    shape = venv.single_observation_space["glimpse"].shape
    torch.manual_seed(0)
    yield "ram", RAM(shape, hidden=16), venv, {}
    yield "ram-lstm", RAM(shape, hidden=16, core="lstm"), venv, {}
    dmdp = MDPConfig(glimpse_size=4, num_scales=2, num_glimpses=3, context_size=8)
    dvenv = GlimpseVectorEnv(src, B, dmdp, shuffle=False)
    yield "dram", DRAM(shape, (1, 8, 8), hidden=16), dvenv, {}
    pmdp = MDPConfig(glimpse_size=4, num_scales=2, num_glimpses=3, num_parts=2, context_size=12)
    pvenv = GlimpseVectorEnv(src, B, pmdp, shuffle=False)
    space = pvenv.single_observation_space
    yield "parts", PartsNet(space["context"].shape, space["glimpse"].shape, 10, steps=2), pvenv, {}
    cfg = PPOTrainConfig(
        algo="sb3-recurrent-ppo", batch_size=B, hidden=16, num_glimpses=3, glimpse_size=4
    ).resolved()
    svenv = GlimpseVectorEnv(src, B, cfg.mdp(), shuffle=False)
    yield "sb3", build_recurrent_ppo(cfg, svenv), svenv, {"sb3_grid": cfg.sb3_grid}


@pytest.mark.parametrize("case", list(_hard_agents()), ids=lambda c: c[0])
def test_every_agent_kind_gives_footprints_fixations_and_boxes(case):
    _, model, venv, kw = case
    got = where(model, venv, **kw)
    assert isinstance(got, Where) and got.kind == "hard"
    cfg = venv.config
    _check_distribution(got.maps, B)
    _check_distribution(got.maps_all_scales, B)
    assert got.predictions.shape[0] == B and got.predictions.dtype == torch.long
    lead = got.fixations.shape[:-1]
    assert lead[0] == B and got.fixations.abs().max() <= 1
    assert got.glimpse_boxes.shape == (*lead, cfg.num_scales, 4)
    flat = got.fixations.reshape(-1, 2)
    expect = patch_boxes(flat, H, W, cfg.glimpse_size, cfg.num_scales, cfg.scale_factor)
    torch.testing.assert_close(got.glimpse_boxes.reshape(-1, cfg.num_scales, 4), expect)
    assert got.gradcam is None and got.raw == {}


# -------------------------------------------------- registry-wide: soft models
def _soft_model(name: str) -> torch.nn.Module:
    cfg = SoftTrainConfig(module=name, widths=(8, 16), insert_after=("stage2",))
    torch.manual_seed(0)
    model = build_model(cfg, (1, H, W), 10)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # zero-initialised gates and scales do something
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


@pytest.mark.parametrize("name", valid_modules())
def test_every_soft_module_gives_a_distribution_or_declares_none(name):
    model = _soft_model(name).train()
    got = where(model, _images(), batch_size=3)  # two batches
    assert got.kind == "soft" and got.fixations is None and got.predictions.shape == (B, 1)
    assert model.training  # the mode is restored
    _check_distribution(got.gradcam, B)  # every CNN: the common baseline
    if name in CHANNEL_ONLY or name == "none":
        assert got.maps is None and got.raw == {}
        assert got.without and all(why for why in got.without.values())
        return
    _check_distribution(got.maps, B)
    assert got.map("module") is got.maps and got.map("footprint") is None
    assert len(got.raw) == 1 and not got.without
    (raw,) = got.raw.values()
    assert raw.ndim == 3 and raw.shape[0] == B


def test_soft_where_matches_the_batched_pieces():
    from glimpse.attention import grad_cam
    from soft_baselines.attention_maps import soft_attention_map

    model = _soft_model("cbam").eval()
    x = _images()
    got = where(model, ImageSource(x, torch.zeros(B).long()), indices=torch.tensor([4, 0]))
    maps, _ = soft_attention_map(model, x[[4, 0]])
    torch.testing.assert_close(got.maps, maps)
    torch.testing.assert_close(got.gradcam, grad_cam(model, model.features[-1], x[[4, 0]]))
    assert torch.equal(got.predictions[:, 0], model(x[[4, 0]]).argmax(1))
    assert math.isclose(float(got.maps.sum()), 2.0, rel_tol=1e-5)
