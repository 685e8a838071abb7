"""``glimpse.parts_metrics``: part and digit hits against hand-computed distances."""

from __future__ import annotations

import pytest
import torch

from glimpse.parts_metrics import digit_hits, digits_covered, hit_summary, part_hits

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------- part hits
def test_part_hits_against_hand_computed_distances():
    loc = torch.tensor([[[0.0, 0.0], [-0.9, -0.9]]])  # pixels (50, 50) and (5, 5)
    box = torch.tensor([[40.0, 40.0, 60.0, 80.0]])  # longer side 40 -> radius 10 px
    parts = torch.tensor([[[50.0, 61.0, 1.0], [5.0, 5.0, 0.0], [55.0, 55.0, 1.0]]])
    hits = part_hits(loc, parts, box, (100, 100), radius=0.25)
    assert hits.tolist() == [[True, False]]  # 7.07 px from a visible part; (5, 5) invisible
    parts[0, 2, 2] = 0.0  # hide the near part: 11 px from (50, 61) is a miss
    assert part_hits(loc, parts, box, (100, 100), 0.25).tolist() == [[False, False]]
    assert part_hits(loc, parts, box, (100, 100), 0.3).tolist() == [[True, False]]
    with pytest.raises(ValueError, match="radius"):
        part_hits(loc, parts, box, (100, 100), 0.0)


def test_digit_hits_and_coverage():
    boxes = torch.tensor([[[0.0, 0.0, 28.0, 28.0], [50.0, 50.0, 78.0, 78.0]]] * 2)
    loc = torch.tensor(
        [[[-0.8, -0.8], [0.0, 0.0]], [[-0.8, -0.8], [0.9, -0.9]]]
    )  # pixels (10, 10) & (50, 50) [on the edge]; (10, 10) & (95, 5)
    assert digit_hits(loc, boxes, (100, 100)).tolist() == [[True, True], [True, False]]
    assert digits_covered(loc, boxes, (100, 100)).tolist() == [True, False]
    s = hit_summary(digit_hits(loc, boxes, (100, 100)))
    assert s == {"part_hit": 0.75, "part_hit/0": 1.0, "part_hit/1": 0.5}
