"""Retina tests: the batched area-averaging retina against a per-sample loop reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from glimpse import retina as retina_module
from glimpse.retina import (
    BoxPyramid,
    IntegralImage,
    Retina,
    coarse_view,
    foveate,
    foveate_integral,
    foveate_pyramid,
    integer_cells,
    loc_to_pixel,
    patch_boxes,
    pixel_to_loc,
)
from tests.reference.retina import naive_foveate


def _loc_from_pixels(px: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return pixel_to_loc(px.double(), h, w)


def test_coordinates_match_grid_sample_convention():
    h, w = 6, 10
    loc = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])
    pix = loc_to_pixel(loc, h, w)
    torch.testing.assert_close(pix, torch.tensor([[0.0, 0.0], [10.0, 6.0], [5.0, 3.0]]))
    torch.testing.assert_close(pixel_to_loc(pix, h, w), loc)
    # A pixel centre, sampled by grid_sample(align_corners=False), returns that pixel.
    img = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)
    centre = pixel_to_loc(torch.tensor([[7.5, 2.5]]), h, w)
    val = F.grid_sample(img, centre.view(1, 1, 1, 2), align_corners=False)
    assert val.item() == img[0, 0, 2, 7].item()


def test_pixel_aligned_equals_crop_and_avg_pool():
    torch.manual_seed(0)
    h, w, g, k, s = 28, 36, 4, 3, 2.0
    images = torch.rand(5, 2, h, w)
    # Centres on even pixel coordinates so every scale's patch is pixel-aligned.
    px = torch.tensor([[14, 14], [0, 0], [36, 28], [20, 6], [-4, 30]], dtype=torch.float64)
    loc = _loc_from_pixels(px, h, w).float()
    out = foveate(images, loc, g, k, s)
    ref = naive_foveate(images, loc, g, k, s)
    assert out.shape == (5, k, 2, g, g)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_single_pixel_cells_copy_pixels():
    img = torch.arange(25, dtype=torch.float32).view(1, 1, 5, 5)
    loc = _loc_from_pixels(torch.tensor([[2.5, 2.5]]), 5, 5).float()
    out = foveate(img, loc, 3)
    torch.testing.assert_close(out[0, 0, 0], img[0, 0, 1:4, 1:4])


def test_subpixel_is_exact_area_average():
    # Half-pixel shift with unit cells: each cell straddles 2x2 pixels with weight 1/4 each.
    img = torch.arange(16, dtype=torch.float64).view(1, 1, 4, 4)
    loc = _loc_from_pixels(torch.tensor([[2.0, 2.0]]), 4, 4)  # patch [0.5, 3.5]^2, g=3
    out = foveate(img, loc, 3)[0, 0, 0]
    expected = F.avg_pool2d(img, 2, stride=1)[0, 0]  # means of 2x2 blocks at offsets 0..2
    torch.testing.assert_close(out, expected)


def test_non_integer_scale_matches_supersampled_reference():
    torch.manual_seed(1)
    images = torch.rand(3, 1, 20, 24, dtype=torch.float64)
    # s = 1.5: cells of side 1, 1.5, 2.25 pixels, on the 1/4 grid with these centres.
    px = torch.tensor([[12.0, 10.0], [3.25, 17.75], [23.5, 0.5]], dtype=torch.float64)
    loc = _loc_from_pixels(px, 20, 24)
    out = foveate(images, loc, 4, 3, 1.5)
    ref = naive_foveate(images, loc, 4, 3, 1.5, supersample=8)
    torch.testing.assert_close(out, ref)


def test_outside_reads_zero_and_partial_cells_average_with_zero():
    ones = torch.ones(1, 1, 8, 8)
    far = torch.tensor([[5.0, -7.0]])
    assert foveate(ones, far, 4, 2).abs().max().item() == 0.0
    # Patch centred on the left edge: left half outside (zeros), right half inside (ones).
    edge = _loc_from_pixels(torch.tensor([[0.0, 4.0]]), 8, 8).float()
    out = foveate(ones, edge, 4)[0, 0, 0]
    assert torch.equal(out[:, :2], torch.zeros(4, 2))
    assert torch.equal(out[:, 2:], torch.ones(4, 2))
    # Unit cells centred on a pixel edge half outside: cell covers half a pixel.
    edge2 = _loc_from_pixels(torch.tensor([[0.0, 4.5]]), 8, 8).float()
    torch.testing.assert_close(foveate(ones, edge2, 1)[0, 0, 0, 0, 0], torch.tensor(0.5))


def test_constant_image_gives_covered_fraction():
    h, w = 10, 14
    ones = torch.ones(1, 1, h, w, dtype=torch.float64)
    loc = torch.tensor([[0.3, -0.55]], dtype=torch.float64)
    g, k, s = 5, 3, 1.7
    out = foveate(ones, loc, g, k, s)
    boxes = patch_boxes(loc, h, w, g, k, s)[0]
    for i in range(k):
        x0, y0, x1, y1 = boxes[i].tolist()
        inside = (min(x1, w) - max(x0, 0)) * (min(y1, h) - max(y0, 0))
        torch.testing.assert_close(out[0, i].mean(), torch.tensor(inside / (x1 - x0) ** 2).double())


def test_patch_boxes_sizes():
    loc = torch.zeros(2, 2)
    boxes = patch_boxes(loc, 60, 60, 12, 3, 2.0)
    assert boxes.shape == (2, 3, 4)
    sides = boxes[0, :, 2] - boxes[0, :, 0]
    torch.testing.assert_close(sides, torch.tensor([12.0, 24.0, 48.0]))
    torch.testing.assert_close(boxes[0, 0], torch.tensor([24.0, 24.0, 36.0, 36.0]))


def test_retina_object_flat_view_and_shapes():
    r = Retina(glimpse_size=6, num_scales=2, scale_factor=2.0)
    images = torch.rand(3, 3, 11, 17)
    loc = torch.rand(3, 2) * 2 - 1
    out = r(images, loc)
    assert out.shape == (3, *r.output_shape(3)) == (3, 2, 3, 6, 6)
    flat = r.flat(images, loc)
    assert flat.shape == (3, r.pixels_seen(3)) == (3, 2 * 3 * 36)
    torch.testing.assert_close(flat, out.reshape(3, -1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes_follow_input(dtype):
    images = torch.rand(2, 1, 12, 9).to(dtype)
    loc = torch.zeros(2, 2, dtype=dtype)
    out = foveate(images, loc, 4, 2)
    assert out.dtype == dtype
    ref = foveate(images.double(), loc.double(), 4, 2)
    tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2}.get(dtype, 1e-6)
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)


def test_gradient_flows_to_image():
    images = torch.rand(2, 1, 8, 8, requires_grad=True)
    foveate(images, torch.zeros(2, 2), 4, 2).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"glimpse_size": 0}, "glimpse_size"),
        ({"glimpse_size": 2.5}, "glimpse_size"),
        ({"num_scales": 0}, "num_scales"),
        ({"num_scales": 2, "scale_factor": 0.5}, "scale_factor"),
        ({"scale_factor": -1.0}, "scale_factor"),
        ({"scale_factor": float("nan")}, "scale_factor"),
        ({"scale_factor": float("inf")}, r"scale_factor must be a finite real number, got inf"),
        ({"num_scales": 3, "scale_factor": float("inf")}, "finite real number, got inf"),
        ({"num_scales": 3, "scale_factor": 1e200}, r"scale_factor=1e\+200 is too large"),
    ],
)
def test_bad_parameters_raise(kwargs, match):
    args = {"glimpse_size": 4, "num_scales": 1, "scale_factor": 2.0} | kwargs
    with pytest.raises(ValueError, match=match):
        foveate(torch.rand(1, 1, 8, 8), torch.zeros(1, 2), **args)
    with pytest.raises(ValueError, match=match):
        Retina(**args)


def test_bad_inputs_raise():
    img = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        foveate(torch.rand(8, 8), torch.zeros(2, 2), 4)
    with pytest.raises(ValueError, match="floating point"):
        foveate(img.to(torch.uint8), torch.zeros(2, 2), 4)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        foveate(img, torch.zeros(2, 3), 4)
    with pytest.raises(ValueError, match="3 rows but there are 2 images"):
        foveate(img, torch.zeros(3, 2), 4)
    with pytest.raises(ValueError, match="floating-point"):
        foveate(img, torch.zeros(2, 2, dtype=torch.long), 4)


LOC_NAN = "loc\\[3\\] is \\(nan, 0.25\\); expected finite \\(x, y\\)"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("kind", ["foveate", "integral", "pyramid", "boxes", "to_pixel"])
def test_non_finite_locations_raise_naming_the_row(kind, bad):
    images = torch.rand(5, 1, 12, 12)
    loc = torch.full((5, 2), 0.25)
    loc[3, 0] = bad
    calls = {
        "foveate": lambda: foveate(images, loc, 4, 2, 2.0),
        "integral": lambda: foveate_integral(IntegralImage(images), loc, 4, 2, 1.5),
        "pyramid": lambda: foveate_pyramid(BoxPyramid(images, (1, 2)), loc, 4, 2, 2.0),
        "boxes": lambda: patch_boxes(loc, 12, 12, 4, 2, 2.0),
        "to_pixel": lambda: loc_to_pixel(loc, 12, 12),
    }
    with pytest.raises(ValueError, match=LOC_NAN.replace("nan", str(bad))) as info:
        calls[kind]()
    assert "\n" not in str(info.value)
    # Prepared images through the Retina object too, and locations outside [-1, 1] stay valid.
    retina = Retina(4, 2, 2.0)
    with pytest.raises(ValueError, match=LOC_NAN.replace("nan", str(bad))):
        retina(retina.prepare(images), loc)
    far = torch.full((5, 2), 3.0)
    assert torch.equal(retina(images, far), torch.zeros(5, 2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"pix\[0\] is \(nan, nan\)"):
        pixel_to_loc(torch.full((1, 2), float("nan")), 12, 12)


# Locations on the quarter-pixel grid, inside, at corners and fully outside.
@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(3, 20),
    w=st.integers(3, 20),
    c=st.integers(1, 3),
    g=st.integers(1, 6),
    k=st.integers(1, 3),
    s=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
    data=st.data(),
)
def test_property_matches_loop_reference(h, w, c, g, k, s, data):
    b = 2
    q = 8  # every edge below lies on the 1/8 pixel grid for these g, s
    xs = data.draw(st.lists(st.integers(-4 * w, 8 * w), min_size=b, max_size=b))
    ys = data.draw(st.lists(st.integers(-4 * h, 8 * h), min_size=b, max_size=b))
    # Centres on the 1/4 grid, but only where half a patch side keeps edges on the 1/8 grid.
    px = torch.tensor([[x / 4, y / 4] for x, y in zip(xs, ys, strict=True)], dtype=torch.float64)
    gen = torch.Generator().manual_seed(h * 1000 + w)
    images = torch.rand(b, c, h, w, generator=gen, dtype=torch.float64)
    loc = pixel_to_loc(px, h, w)
    out = foveate(images, loc, g, k, s)
    ref = naive_foveate(images, loc, g, k, s, supersample=q)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(foveate_integral(IntegralImage(images), loc, g, k, s), ref)
    retina = Retina(g, k, s)
    torch.testing.assert_close(retina(retina.prepare(images), loc), ref)
    cells = integer_cells(k, s)
    if cells is not None:  # every s here with integer cells: the box-pyramid path
        torch.testing.assert_close(foveate_pyramid(BoxPyramid(images, cells), loc, g, k, s), ref)


@settings(max_examples=40, deadline=None)
@given(
    x=st.floats(-3, 3),
    y=st.floats(-3, 3),
    s=st.floats(1.0, 4.0),
    k=st.integers(1, 4),
)
def test_property_bounds_and_linearity(x, y, s, k):
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(1, 2, 13, 9, generator=gen, dtype=torch.float64)
    bimg = torch.rand(1, 2, 13, 9, generator=gen, dtype=torch.float64)
    loc = torch.tensor([[x, y]], dtype=torch.float64)
    fa, fb = foveate(a, loc, 4, k, s), foveate(bimg, loc, 4, k, s)
    # An average of values in [0, 1] and zeros stays in [0, 1]; the map is linear.
    assert fa.min() >= 0 and fa.max() <= 1 + 1e-12
    torch.testing.assert_close(foveate(2 * a - bimg, loc, 4, k, s), 2 * fa - fb)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    images = torch.rand(16, 3, 60, 44)
    loc = torch.rand(16, 2) * 2.4 - 1.2
    cpu = foveate(images, loc, 12, 3, 2.0)
    gpu = foveate(images.cuda(), loc.cuda(), 12, 3, 2.0)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


def test_integral_path_matches_one_shot_float32():
    torch.manual_seed(3)
    images = torch.rand(64, 2, 100, 70)
    loc = torch.rand(64, 2) * 2.6 - 1.3
    r = Retina(12, 4, 2.0)
    prepared = r.prepare(images)
    assert isinstance(prepared, BoxPyramid)
    out = r(prepared, loc)
    assert out.dtype == torch.float32 and out.shape == (64, 4, 2, 12, 12)
    # All match the float64 computation to float32 pixel-coordinate rounding (~1e-5 px at
    # 100 px: the one-shot path's geometry, grid_sample's coordinates in the pyramid path);
    # the float64 summed-area table computes its geometry in float64.
    exact = r(images.double(), loc.double())
    torch.testing.assert_close(out.double(), exact, rtol=0, atol=2e-5)
    torch.testing.assert_close(r(images, loc).double(), exact, rtol=0, atol=2e-5)
    integral = foveate_integral(IntegralImage(images), loc, 12, 4, 2.0)
    torch.testing.assert_close(integral.double(), exact, rtol=0, atol=1e-6)
    torch.testing.assert_close(r.flat(prepared, loc), out.reshape(64, -1))
    # float64 images: the pyramid path is exact to float64 rounding.
    out64 = r(r.prepare(images.double()), loc.double())
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64, exact, rtol=0, atol=1e-12)


def test_prepare_picks_pyramid_for_integer_cells():
    images = torch.rand(2, 1, 9, 7)
    assert isinstance(Retina(3, 3, 2.0).prepare(images), BoxPyramid)
    assert isinstance(Retina(3, 2, 3.0).prepare(images), BoxPyramid)
    assert isinstance(Retina(3, 1, 1.5).prepare(images), BoxPyramid)
    assert isinstance(Retina(3, 2, 1.5).prepare(images), IntegralImage)
    assert integer_cells(3, 2.0) == (1, 2, 4) and integer_cells(2, 1.5) is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_pyramid_low_precision_images(dtype):
    images = torch.rand(3, 2, 10, 13).to(dtype)
    loc = torch.rand(3, 2) * 2.4 - 1.2
    r = Retina(4, 3, 2.0)
    out = r(r.prepare(images), loc.to(dtype))
    assert out.dtype == dtype
    ref = foveate(images.double(), loc.to(dtype).double(), 4, 3, 2.0)
    tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)


def test_pyramid_rejects_bad_cells_and_mismatched_retina():
    images = torch.rand(2, 1, 8, 8)
    for cells in [(), (0, 1), (2, 1), (2, 3), (1.0, 2.0)]:
        with pytest.raises(ValueError, match="cell"):
            BoxPyramid(images, cells)
    pyramid = BoxPyramid(images, (1, 2))
    with pytest.raises(ValueError, match="cell sides"):
        foveate_pyramid(pyramid, torch.zeros(2, 2), 4, 3, 2.0)
    with pytest.raises(ValueError, match="cell sides"):
        foveate_pyramid(pyramid, torch.zeros(2, 2), 4, 2, 3.0)
    with pytest.raises(ValueError, match="3 rows but there are 2 images"):
        foveate_pyramid(pyramid, torch.zeros(3, 2), 4, 2)
    # Fewer scales than the pyramid holds use its first ones.
    loc = torch.rand(2, 2) * 2 - 1
    expected = foveate(images.double(), loc.double(), 4, 1)
    torch.testing.assert_close(
        foveate_pyramid(pyramid, loc, 4).double(), expected, atol=2e-5, rtol=0
    )


def test_integral_path_rejects_bad_input():
    prepared = IntegralImage(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="3 rows but there are 2 images"):
        foveate_integral(prepared, torch.zeros(3, 2), 4)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        IntegralImage(torch.rand(8, 8))


@pytest.mark.parametrize("kind", ["integral", "pyramid"])
@pytest.mark.parametrize("as_mask", [False, True])
def test_integral_replace_updates_only_chosen_slots(kind, as_mask):
    a, b = torch.rand(4, 1, 9, 7).double(), torch.rand(2, 1, 9, 7).double()
    prepared = IntegralImage(a) if kind == "integral" else BoxPyramid(a, (1, 2))
    index = torch.tensor([False, True, False, True]) if as_mask else torch.tensor([1, 3])
    prepared.replace(index, b)
    loc = torch.rand(4, 2, dtype=torch.float64) * 2 - 1
    expected = foveate(torch.stack([a[0], b[0], a[2], b[1]]), loc, 3, 2)
    torch.testing.assert_close(foveate_integral(prepared, loc, 3, 2), expected)
    with pytest.raises(ValueError, match="replacement images"):
        prepared.replace(torch.tensor([0]), torch.rand(1, 1, 9, 8))


@pytest.mark.parametrize("chunk", [1, 1 << 20])  # a few images per chunk, or all at once
def test_pyramid_replace_rebuilds_exactly_what_a_fresh_build_gives(chunk, monkeypatch):
    """In-place rebuilds (all slots in order, a permutation, some slots) hold the same bits
    as a fresh :class:`BoxPyramid` of the new images, with scales of 1, 2, 4 and 8 cells."""
    monkeypatch.setattr(retina_module, "_CHUNK_ELEMENTS", chunk * 4 * 2 * 20 * 20)
    a, b = torch.rand(5, 2, 13, 11), torch.rand(5, 2, 13, 11)
    cells = (1, 2, 4, 8)
    pyramid = BoxPyramid(a, cells)
    pyramid.replace(torch.arange(5), b)
    assert torch.equal(pyramid.table, BoxPyramid(b, cells).table)
    order = torch.tensor([3, 0, 4, 1, 2])
    pyramid.replace(order, a)
    assert torch.equal(pyramid.table, BoxPyramid(a[order.argsort()], cells).table)
    pyramid.replace(torch.tensor([4, 1]), b[:2])
    want = BoxPyramid(torch.stack([a[order.argsort()][i] for i in range(5)]), cells).table
    want[[4, 1]] = BoxPyramid(b[:2], cells).table
    assert torch.equal(pyramid.table, want)
    with pytest.raises(ValueError, match="index selects 2 slots for 3 images"):
        pyramid.replace(torch.tensor([0, 1]), b[:3])


def test_coarse_view_is_area_average_of_whole_image():
    img = torch.arange(36, dtype=torch.float64).view(1, 1, 6, 6)
    out = coarse_view(img, 3)
    torch.testing.assert_close(out, F.avg_pool2d(img, 2))
    # Non-square: the short side is padded with zeros symmetrically.
    wide = torch.ones(2, 1, 4, 8)
    view = coarse_view(wide, 2)
    assert view.shape == (2, 1, 2, 2)
    torch.testing.assert_close(view, torch.full((2, 1, 2, 2), 0.5))
    with pytest.raises(ValueError, match="size"):
        coarse_view(img, 7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("cells", "g", "k", "s", "h", "w"),
    [((1,), 8, 1, 2.0, 28, 28), ((1, 2, 4), 12, 3, 2.0, 60, 60), ((1, 3, 9), 5, 2, 3.0, 20, 24)],
)
def test_one_image_paths_match_the_batched_paths_bit_for_bit(cells, g, k, s, h, w, dtype):
    # One image on the CPU is prepared and glimpsed through numpy and Python floats (the
    # batch-of-one env's hot path); it must give exactly what the batched torch code gives.
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(4, 2, h, w, generator=gen, dtype=dtype)
    batched = BoxPyramid(images, cells)
    loc = (torch.rand(4, 2, generator=gen) * 2.6 - 1.3).to(dtype)
    want = foveate_pyramid(batched, loc, g, k, s)
    retina = Retina(g, k, s)
    torch.testing.assert_close(retina.sample(batched, loc), want, rtol=0, atol=0)
    one = BoxPyramid(images[:1], cells)
    for i in range(4):
        single = BoxPyramid(images[i : i + 1], cells)
        assert torch.equal(single.table, batched.table[i : i + 1])
        one.refill(images[i : i + 1])  # in place, as a reset of a batch of one
        assert torch.equal(one.table, single.table)
        got = retina.sample(one, loc[i : i + 1])
        assert torch.equal(got, want[i : i + 1])
        assert torch.equal(foveate_pyramid(one, loc[i : i + 1], g, k, s), got)


def test_refill_rejects_a_different_batch():
    pyramid = BoxPyramid(torch.rand(2, 1, 8, 8), (1, 2))
    with pytest.raises(ValueError, match="refill needs 2 images, got 1"):
        pyramid.refill(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"replacement images must have shape \(n, 1, 8, 8\)"):
        IntegralImage(torch.rand(2, 1, 8, 8)).refill(torch.rand(2, 1, 8, 9))
