"""``glimpse.attention``: footprints of fixations and the box scores, on constructed cases
whose answers are known, and against a naive pixel loop."""

from __future__ import annotations

import pytest
import torch

from glimpse.attention import (
    box_coverage,
    fixation_scores,
    fixations_in_boxes,
    footprint_map,
    grad_cam,
    map_scores,
    mass_in_boxes,
    pointing_hits,
)
from glimpse.retina import pixel_to_loc


def _naive_footprint(pixels, h, w, side):
    """A loop over pixels: 1 where the pixel centre is inside the square of ``side``
    centred at each pixel-coordinate point, each point's square normalised, summed."""
    out = torch.zeros(h, w, dtype=torch.float64)
    for px, py in pixels:
        sq = torch.zeros(h, w, dtype=torch.float64)
        for r in range(h):
            for c in range(w):
                if abs(c + 0.5 - px) < side / 2 and abs(r + 0.5 - py) < side / 2:
                    sq[r, c] = 1
        out += sq / sq.sum()
    return out / out.sum()


def test_footprint_of_pixel_aligned_glimpses_matches_a_naive_loop():
    h, w, g = 20, 30, 4
    pixels = [(6.0, 8.0), (20.0, 10.0), (10.0, 12.0)]  # centres on pixel corners: aligned
    loc = pixel_to_loc(torch.tensor(pixels, dtype=torch.float64), h, w)[None]
    got = footprint_map(loc, h, w, g)
    assert got.shape == (1, h, w)
    assert torch.allclose(got[0], _naive_footprint(pixels, h, w, g), atol=1e-12)
    assert got.sum().item() == pytest.approx(1.0)


def test_footprint_all_scales_shares_each_fixation_between_its_patches():
    h = w = 32
    loc = torch.zeros(1, 1, 2, dtype=torch.float64)  # the centre
    fine = footprint_map(loc, h, w, 4, num_scales=2, scales="finest")
    both = footprint_map(loc, h, w, 4, num_scales=2, scales="all")
    # finest: 16 pixels of 1/16; all: half the mass on 16 pixels, half on 64 (overlapping)
    assert fine[0, 15, 15].item() == pytest.approx(1 / 16)
    assert both[0, 15, 15].item() == pytest.approx(0.5 / 16 + 0.5 / 64)
    assert both[0, 12, 12].item() == pytest.approx(0.5 / 64)
    assert both[0, 11, 11].item() == 0.0
    assert both.sum().item() == pytest.approx(1.0)


def test_footprint_clipped_at_the_border_keeps_the_fixations_mass():
    h = w = 10
    loc = torch.tensor([[[-1.0, -1.0], [0.0, 0.0]]])  # a corner and the centre
    m = footprint_map(loc, h, w, 4)
    assert m[0, :2, :2].sum().item() == pytest.approx(0.5)  # 4 pixels inside the image
    assert m[0, 3:7, 3:7].sum().item() == pytest.approx(0.5)


def test_mass_in_boxes_known_answers():
    maps = torch.zeros(3, 8, 8)
    maps[0, 2:4, 2:4] = 1.0  # all inside the box
    maps[1, 6:, 6:] = 1.0  # all outside
    maps[2, 2:4, 2:6] = 1.0  # half inside
    boxes = torch.tensor([[2.0, 2.0, 4.0, 4.0]]).expand(3, 4)
    assert mass_in_boxes(maps, boxes).tolist() == [1.0, 0.0, 0.5]
    # a partly covered pixel counts by area; raw (unnormalised) maps are fine
    one = torch.zeros(1, 4, 4)
    one[0, 1, 1] = 7.0
    assert mass_in_boxes(one, torch.tensor([[1.25, 1.0, 2.0, 2.0]])).item() == pytest.approx(0.75)
    # the union of two boxes counts their overlap once
    two = torch.ones(1, 4, 4)
    union = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]]])
    assert mass_in_boxes(two, union).item() == pytest.approx(7 / 16)
    with pytest.raises(ValueError, match="non-negative"):
        mass_in_boxes(-maps, boxes)
    with pytest.raises(ValueError, match="3 maps"):
        mass_in_boxes(maps, boxes[:2])


def test_pointing_game_and_fixation_hits():
    maps = torch.zeros(2, 10, 10)
    maps[0, 5, 5] = 1.0  # centre (5.5, 5.5): inside [4, 7]^2
    maps[1, 0, 9] = 1.0  # top-right corner: outside
    boxes = torch.tensor([[4.0, 4.0, 7.0, 7.0]]).expand(2, 4)
    assert pointing_hits(maps, boxes).tolist() == [True, False]
    loc = pixel_to_loc(torch.tensor([[5.0, 5.0], [9.5, 0.5], [4.0, 7.0]]), 10, 10)
    hits = fixations_in_boxes(loc[None].expand(2, 3, 2), boxes, 10, 10)
    assert hits.tolist() == [[True, False, True], [True, False, True]]  # closed box


def test_box_coverage_is_the_overlap_area():
    cover = box_coverage(torch.tensor([[0.5, -1.0, 2.0, 1.5]]), 3, 3)
    want = torch.tensor([[0.5, 1.0, 0.0], [0.25, 0.5, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(cover[0, 0], want)


def test_footprint_of_the_fixations_lies_on_the_box_they_hit():
    """Consistency between the two hard-agent scores: fixations inside a box whose glimpse
    fits inside it put all their footprint mass inside it."""
    h = w = 28
    box = torch.tensor([[4.0, 4.0, 20.0, 20.0]])
    loc = pixel_to_loc(torch.tensor([[8.0, 8.0], [16.0, 12.0]]), h, w)[None]
    assert fixations_in_boxes(loc, box, h, w).all()
    assert mass_in_boxes(footprint_map(loc, h, w, 8), box).item() == pytest.approx(1.0)


class _GapNet(torch.nn.Module):
    """features = conv(image); logits = W @ GAP(features): Grad-CAM has a closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Conv2d(1, 3, 3, padding=1, bias=False)
        self.head = torch.nn.Linear(3, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_grad_cam_equals_its_closed_form_for_a_gap_network():
    torch.manual_seed(0)
    net = _GapNet().double()
    images = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    targets = torch.tensor([1, 3])
    got = grad_cam(net, net.features, images, targets)
    acts = net.features(images).detach()
    weights = net.head.weight[targets].detach() / (6 * 6)  # d logit / dA, spatially constant
    want = torch.relu((weights[:, :, None, None] * acts).sum(1))  # same size: no resampling
    want = want / want.sum(dim=(1, 2), keepdim=True)
    assert torch.allclose(got, want, atol=1e-12)
    assert all(p.grad is None for p in net.parameters())


def test_grad_cam_points_at_the_evidence_and_defaults_to_the_prediction():
    net = _GapNet()
    with torch.no_grad():
        net.features.weight.zero_()
        net.features.weight[0, 0, 1, 1] = 1.0  # channel 0 = the image itself
        net.head.weight.zero_()
        net.head.weight[2, 0] = 1.0  # class 2 = mean brightness
    images = torch.zeros(1, 1, 16, 16)
    images[0, 0, 3:6, 10:13] = 1.0  # a blob
    cam = grad_cam(net, net.features, images)  # predicted: class 2
    box = torch.tensor([[10.0, 3.0, 13.0, 6.0]])
    assert mass_in_boxes(cam, box).item() == pytest.approx(1.0)
    assert pointing_hits(cam, box).item()
    flat = grad_cam(net, net.features, images, torch.tensor([0]))  # no evidence: uniform
    assert torch.allclose(flat, torch.full_like(flat, 1 / 256))
    with pytest.raises(ValueError, match="was not called"):
        grad_cam(net, torch.nn.Conv2d(1, 1, 1), images)


def test_map_scores_inside_and_outside_the_box():
    inside = torch.zeros(2, 10, 10)
    inside[:, 2:5, 3:6] = 1.0
    box = torch.tensor([3.0, 2.0, 6.0, 5.0]).expand(2, 4)
    got = map_scores(inside / inside.sum((1, 2), keepdim=True), box)
    assert got["mass_in_box"].tolist() == [1.0, 1.0] and got["pointing"].all()
    outside = torch.zeros(2, 10, 10)
    outside[:, 7:, 7:] = 1.0
    clutter = torch.tensor([[7.0, 7.0, 10.0, 10.0]]).expand(2, 1, 4)
    got = map_scores(outside, box, clutter)
    assert got["mass_in_box"].tolist() == [0.0, 0.0] and not got["pointing"].any()
    assert got["mass_on_clutter"].tolist() == [1.0, 1.0]


def test_fixation_scores_per_step_and_per_part():
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])  # the top-left sixth of a 60x60 image
    clutter = torch.tensor([[[50.0, 50.0, 60.0, 60.0]]])
    locs = torch.tensor([[[-0.9, -0.9], [0.9, 0.9], [0.0, 0.0]]])  # in, on clutter, neither
    got = fixation_scores(locs, box, 60, 60, clutter)
    assert got["fixation_in_box"].tolist() == [[True, False, False]]
    assert got["fixation_on_clutter"].tolist() == [[False, True, False]]
    parts = fixation_scores(locs.reshape(1, 1, 3, 2), box, 60, 60)  # (B, S, K, 2)
    assert parts["fixation_in_box"].tolist() == [[[True, False, False]]]
    assert "fixation_on_clutter" not in parts
