"""``soft_baselines.attention_maps``: every registered module's own spatial map through one
hook that changes nothing, and constructed cases with known answers."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from glimpse.attention import mass_in_boxes, pointing_hits, to_image_distribution
from soft_baselines import create, get_entry, list_modules, register
from soft_baselines.attention_maps import (
    attention_blocks,
    record_attention,
    soft_attention_map,
    spatial_map_blocks,
)
from soft_baselines.backbones import SmallCNN
from soft_baselines.isa import long_range_group, long_range_ungroup, short_range_group
from soft_baselines.registry import _REGISTRY

pytestmark = pytest.mark.usefixtures("one_torch_thread")

B, C, H, W = 2, 16, 7, 10
# Written out on purpose: a new module must be added here or declare a spatial map.
CHANNEL_ONLY = {"cam", "eca", "se", "sk"}


def _perturbed(module: nn.Module, seed: int = 1, scale: float = 0.3) -> nn.Module:
    """Noise on every parameter, so zero-initialised gates and scales do something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def _model_and_input(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if get_entry(name).kind == "transform":  # the STN, as the soft trainer uses it
        model = SmallCNN(1, 10, (20, 18), widths=(8, 16), stn={}, insert_after=())
        # small noise: theta stays near the identity, the grid inside the image
        return _perturbed(model, scale=0.05), torch.rand(B, 1, 20, 18, generator=gen)
    return _perturbed(create(name, C)), torch.randn(B, C, H, W, generator=gen)


def test_every_module_declares_its_map_and_the_channel_only_ones_are_the_expected_set():
    names = list_modules()
    undeclared = [n for n in names if get_entry(n).spatial_map is None]
    assert not undeclared, f"declare spatial_map=True/False in register(): {undeclared}"
    assert {n for n in names if get_entry(n).spatial_map is False} == CHANNEL_ONLY
    for n in names:  # the declaration matches the class: no faked map, no missing one
        has = callable(getattr(get_entry(n).factory, "spatial_map", None))
        assert has == get_entry(n).spatial_map, n


def test_register_refuses_a_declaration_that_does_not_match_the_class():
    class NoMap(nn.Module):
        pass

    class WithMap(nn.Module):
        def spatial_map(self, x):
            return x[:, 0]

    with pytest.raises(ValueError, match="defines no spatial_map"):
        register("_t_nomap", spatial_map=True)(NoMap)
    with pytest.raises(ValueError, match="defines spatial_map"):
        register("_t_withmap", spatial_map=False)(WithMap)
    with pytest.raises(ValueError, match="True, False or None"):
        register("_t_bad", spatial_map=1)  # type: ignore[arg-type]
    assert not {"_t_nomap", "_t_withmap", "_t_bad"} & set(_REGISTRY)


@pytest.mark.parametrize("name", list_modules())
def test_every_module_gives_a_distribution_or_declares_none(name):
    model, x = _model_and_input(name)
    model.eval()
    maps, raw = soft_attention_map(model, x)
    if name in CHANNEL_ONLY:
        assert maps is None and raw == {}
        return
    assert maps is not None and maps.shape == (B, *x.shape[-2:])
    assert (maps >= 0).all() and torch.isfinite(maps).all()
    torch.testing.assert_close(maps.sum(dim=(1, 2)), torch.ones(B), rtol=0, atol=1e-5)
    assert len(raw) == 1
    (m,) = raw.values()
    assert m.ndim == 3 and m.shape[0] == B and not m.requires_grad
    assert m.abs().sum() > 0  # a real map, not an empty placeholder


@pytest.mark.parametrize("name", list_modules())
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_the_hook_changes_nothing(name, train):
    """Output, input and parameter gradients, buffers (BN statistics, EMANet's bases) and
    the RNG state are bit-identical with the hook on and off."""
    model, x = _model_and_input(name)
    twin = copy.deepcopy(model)
    model.train(train)
    twin.train(train)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    with record_attention(model) as record:
        ya = model(xa)
        rng_a = torch.get_rng_state()
    torch.set_rng_state(rng_a)  # the same state for the twin's forward
    yb = twin(xb)
    assert torch.equal(torch.get_rng_state(), rng_a)
    assert torch.equal(ya, yb)
    g = torch.randn(ya.shape, generator=torch.Generator().manual_seed(5))
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(xa.grad, xb.grad)
    for (na, pa), (_, pb) in zip(model.named_parameters(), twin.named_parameters(), strict=True):
        assert torch.equal(pa, pb), na
        assert (pa.grad is None) == (pb.grad is None), na
        if pa.grad is not None:
            assert torch.equal(pa.grad, pb.grad), na
    for (na, ba), (_, bb) in zip(model.named_buffers(), twin.named_buffers(), strict=True):
        assert torch.equal(ba, bb), na
    assert bool(record.maps) == (name not in CHANNEL_ONLY)


def test_no_hook_is_left_behind():
    model = create("cbam", C)
    with record_attention(model):
        assert len(model._forward_pre_hooks) == 1
    assert not model._forward_pre_hooks
    with pytest.raises(RuntimeError), record_attention(model):
        raise RuntimeError("boom")
    assert not model._forward_pre_hooks


def test_smallcnn_blocks_are_named_upsampled_and_averaged():
    torch.manual_seed(0)
    model = _perturbed(
        SmallCNN(1, 10, (28, 28), widths=(8, 16, 16), attention="cbam"),
    ).eval()
    x = torch.rand(3, 1, 28, 28)
    maps, raw = soft_attention_map(model, x)
    assert set(raw) == {"features.stage2_attention", "features.stage3_attention"}
    assert raw["features.stage2_attention"].shape == (3, 7, 7)
    assert raw["features.stage3_attention"].shape == (3, 4, 4)
    each = [to_image_distribution(m, 28, 28) for m in raw.values()]
    torch.testing.assert_close(maps, (each[0] + each[1]) / 2)
    one, _ = soft_attention_map(model, x, block="features.stage3_attention")
    torch.testing.assert_close(one, each[1])
    with pytest.raises(ValueError, match="no spatial map from block"):
        soft_attention_map(model, x, block="features.stage1")
    assert spatial_map_blocks(model) == list(raw)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        soft_attention_map(model, x[0])


def test_plain_and_channel_only_models_have_no_map_and_say_why():
    plain = SmallCNN(1, 10, (28, 28), widths=(8, 8), insert_after=()).eval()
    x = torch.rand(2, 1, 28, 28)
    assert soft_attention_map(plain, x) == (None, {})
    se = SmallCNN(1, 10, (28, 28), widths=(8, 8), attention="se", insert_after=("stage1",))
    with record_attention(se.eval()) as record:
        se(x)
    assert (
        record.maps == {}
        and "channel attention only" in record.without["features.stage1_attention"]
    )
    cbam = create("cbam", 8, spatial=False)
    assert soft_attention_map(cbam, torch.randn(2, 8, 5, 5))[0] is None
    gc = create("gc", 8, pooling="avg")
    assert soft_attention_map(gc, torch.randn(2, 8, 5, 5))[0] is None


def test_parts_of_a_registered_block_are_not_recorded_twice():
    danet = _perturbed(create("danet", C))
    assert [p for p, _, _ in attention_blocks(danet)] == [""]  # not danet.pam / danet.cam
    x = torch.randn(B, C, H, W)
    _, raw = soft_attention_map(danet, x)
    assert list(raw) == [""]
    torch.testing.assert_close(raw[""], danet.pam.spatial_map(x))


# --- constructed cases with known answers --------------------------------------------


def test_cbam_gate_one_inside_the_box_and_zero_outside_puts_all_mass_in_the_box():
    cbam = create("cbam", 4).double()
    with torch.no_grad():
        for p in cbam.mlp.parameters():
            p.zero_()
        cbam.mlp[2].bias.fill_(20.0)  # channel gate sigmoid(40) = 1
        cbam.spatial_conv.weight.zero_()
        k = cbam.spatial_conv.kernel_size[0] // 2
        cbam.spatial_conv.weight[0, 0, k, k] = 200.0  # mean over channels, centre tap
        cbam.spatial_conv.bias.fill_(-100.0)  # 1 inside (mean 1), 0 outside (mean 0)
    x = torch.zeros(2, 4, 12, 16, dtype=torch.float64)
    x[0, :, 2:6, 3:9] = 1.0  # image 0: box x 3..9, y 2..6
    x[1, :, 7:11, 10:15] = 1.0  # image 1: box x 10..15, y 7..11
    boxes = torch.tensor([[3.0, 2.0, 9.0, 6.0], [10.0, 7.0, 15.0, 11.0]], dtype=torch.float64)
    maps, raw = soft_attention_map(cbam, x)
    torch.testing.assert_close(mass_in_boxes(maps, boxes), torch.ones(2, dtype=torch.float64))
    swapped = boxes.flip(0)
    assert mass_in_boxes(maps, swapped).max() < 1e-12
    assert pointing_hits(maps, boxes).all()
    inside = raw[""][0, 2:6, 3:9]
    torch.testing.assert_close(inside, torch.ones_like(inside))


def test_nonlocal_affinity_pointing_at_one_position_peaks_there():
    nl = create("nonlocal", 2, inter_channels=1).double().eval()
    with torch.no_grad():
        nl.theta.weight.zero_()
        nl.theta.bias.fill_(1.0)  # every query is 1
        nl.phi.weight.zero_()
        nl.phi.weight[0, 0] = 1.0  # keys: channel 0
        nl.phi.bias.zero_()
    x = torch.zeros(1, 2, 6, 9, dtype=torch.float64)
    x[0, 0, 4, 7] = 40.0  # every query's softmax puts ~all weight on (4, 7)
    maps, raw = soft_attention_map(nl, x)
    assert raw[""].shape == (1, 6, 9)
    flat = int(raw[""].flatten().argmax())
    assert divmod(flat, 9) == (4, 7)
    assert maps[0, 4, 7] > 0.99
    torch.testing.assert_close(raw[""].sum(), torch.tensor(54.0, dtype=torch.float64))


def test_stn_identity_footprint_is_uniform_and_a_zoom_stays_in_the_middle():
    stn = create("stn", 1)
    x = torch.rand(2, 1, 16, 20)
    raw = stn.spatial_map(x)  # identity at init: every pixel read exactly once
    torch.testing.assert_close(raw, torch.ones(2, 16, 20))
    assert stn.last_theta is None  # the map leaves the forward's record alone
    zoom = create("stn", 1, mode="attention")
    with torch.no_grad():
        zoom.fc_theta.bias.copy_(torch.tensor([0.5, 0.0, 0.0]))  # scale 1/2, centred
    maps, _ = soft_attention_map(zoom, x)
    # samples span pixel coordinates [W/4 - 1/4, 3W/4 + 1/4]: bilinear reads reach one
    # pixel beyond the central half on each side, never further
    wide = torch.tensor([[4.0, 3.0, 16.0, 13.0]]).expand(2, 4)
    torch.testing.assert_close(mass_in_boxes(maps, wide), torch.ones(2))
    middle = torch.tensor([[5.0, 4.0, 15.0, 12.0]]).expand(2, 4)
    assert (mass_in_boxes(maps, middle) > 0.85).all()


def _dense_received(a: torch.Tensor) -> torch.Tensor:
    """Column sums of an explicit (B, N, N) affinity."""
    return a.sum(dim=1)


def test_ema_map_is_the_column_sums_of_the_reconstruction_affinity():
    ema = _perturbed(create("ema", 6, num_bases=4)).double().eval()
    x = torch.randn(2, 6, 3, 5, dtype=torch.float64)
    f = ema.conv_in(x).flatten(2)  # (B, C, N)
    z, mu = ema.em(f, ema.eval_iters)
    usage = z.sum(1, keepdim=True)
    m = torch.bmm(f, z / (1e-6 + usage))  # (B, C, K), before normalisation
    a = torch.einsum("bik,bjk->bij", z, (z / (1e-6 + usage)) / m.norm(dim=1, keepdim=True))
    recon = torch.bmm(mu, z.transpose(1, 2))
    torch.testing.assert_close(recon, torch.bmm(f, a.transpose(1, 2)))  # x~ = X A^T
    torch.testing.assert_close(ema.spatial_map(x).flatten(1), _dense_received(a))


def test_latentgnn_map_is_the_column_sums_of_the_dense_operator():
    block = _perturbed(create("latentgnn", 6, latent_nodes=3)).double()
    x = torch.randn(2, 6, 4, 3, dtype=torch.float64)
    psi, phi = block.kernels(x)
    z = psi.transpose(1, 2) @ x.flatten(2).transpose(1, 2)
    a = torch.softmax(z @ z.transpose(1, 2) / math.sqrt(6), dim=-1)
    dense = phi @ a @ psi.transpose(1, 2)  # (B, N, N)
    torch.testing.assert_close(block.spatial_map(x).flatten(1), _dense_received(dense))


def test_window_maps_give_each_weight_to_the_neighbour_it_weighs():
    block = _perturbed(create("local_relation", 4, kernel_size=3, heads=2)).double()
    x = torch.randn(1, 4, 4, 5, dtype=torch.float64)
    a = block.weights(x).mean(dim=1)[0]  # (9, N)
    want = torch.zeros(4, 5, dtype=torch.float64)
    for t in range(9):
        dy, dx = divmod(t, 3)
        for i in range(20):
            r, c = divmod(i, 5)
            rr, cc = r + dy - 1, c + dx - 1
            if 0 <= rr < 4 and 0 <= cc < 5:
                want[rr, cc] += a[t, i]
            else:
                assert a[t, i] == 0
    torch.testing.assert_close(block.spatial_map(x)[0], want)


def test_criss_cross_map_is_the_column_sums_of_its_dense_affinity():
    cc = _perturbed(create("cc", 8, recurrence=1)).double()
    x = torch.randn(1, 8, 3, 4, dtype=torch.float64)
    a_col, a_row = cc.attention(x)
    dense = torch.zeros(12, 12, dtype=torch.float64)
    for h in range(3):
        for w in range(4):
            for g in range(3):
                dense[h * 4 + w, g * 4 + w] += a_col[0, h, w, g]
            for v in range(4):
                dense[h * 4 + w, h * 4 + v] += a_row[0, h, w, v]
    torch.testing.assert_close(dense.sum(1), torch.ones(12, dtype=torch.float64))
    torch.testing.assert_close(cc.spatial_map(x).flatten(1), _dense_received(dense[None]))


def test_isa_map_is_the_column_sums_of_the_composed_affinity():
    isa = _perturbed(create("isa", 8, block_size=2)).double()
    x = torch.randn(1, 8, 3, 4, dtype=torch.float64)  # padded to 4 x 4
    xp, real, mask_long, mask_short = isa._padded(x)
    n = 16
    index = torch.arange(n, dtype=torch.float64).view(1, 1, 4, 4)

    def dense(a, groups):  # block-sparse (G, L, L) -> (N, N) over padded positions
        out = torch.zeros(n, n, dtype=torch.float64)
        pos = groups.flatten(1).long()  # (G, L) padded-map index of each member
        for g in range(pos.shape[0]):
            out[pos[g][:, None], pos[g][None, :]] = a[g]
        return out

    a_long = isa.long_attn.weights(long_range_group(xp, 2, 2), mask_long)
    y = long_range_ungroup(isa.long_attn(long_range_group(xp, 2, 2), mask_long), 2, 2)
    a_short = isa.short_attn.weights(short_range_group(y, 2, 2), mask_short)
    composed = dense(a_short, short_range_group(index, 2, 2)) @ dense(
        a_long, long_range_group(index, 2, 2)
    )
    keep = real.flatten().double()  # real queries only
    want = (keep[:, None] * composed).sum(0).view(4, 4)[:3, :4]
    torch.testing.assert_close(isa.spatial_map(x)[0], want)
