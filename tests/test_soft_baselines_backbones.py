"""Tests for ``soft_baselines.backbones``: SmallCNN, resnet_with_attention, count_parameters."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import Tensor, nn

import soft_baselines
from soft_baselines.backbones import SmallCNN, count_parameters, resnet_with_attention
from soft_baselines.cbam import CBAM
from soft_baselines.gcnet import GlobalContextBlock
from soft_baselines.nonlocal_block import NonLocalBlock
from soft_baselines.se import SqueezeExcitation
from soft_baselines.stn import SpatialTransformer

SMALL = (8, 16, 32)  # narrow widths keep the tests fast
SIZES = [(28, 28), (60, 60), (100, 100)]
ATTENTIONS = [None, "se", "cbam", "nonlocal", "gc", "sk"]


def rand(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_small_cnn_output_shapes(size: tuple[int, int], attention: str | None) -> None:
    torch.manual_seed(0)
    model = SmallCNN(input_size=size, widths=SMALL, attention=attention, num_classes=7)
    out = model(rand(2, 1, *size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_small_cnn_default_widths_non_square() -> None:
    model = SmallCNN(in_channels=3, input_size=(60, 44), attention="se")
    feats = model.forward_features(rand(2, 3, 60, 44))
    assert feats.shape == (2, 128, 8, 6)  # three ceil-mode 2x2 pools: 60->8, 44->6
    assert model(rand(2, 3, 60, 44)).shape == (2, 10)


def test_small_cnn_insertion_points() -> None:
    model = SmallCNN(widths=SMALL, attention="se")
    names = [n for n, _ in model.features.named_children()]
    assert names == ["stage1", "stage2", "stage2_attention", "stage3", "stage3_attention"]
    assert isinstance(model.features.stage2_attention, SqueezeExcitation)
    assert model.features.stage2_attention.channels == 16
    assert model.features.stage3_attention.channels == 32

    one = SmallCNN(widths=SMALL, attention="cbam", insert_after=("stage1",))
    assert [n for n, _ in one.features.named_children()] == [
        "stage1",
        "stage1_attention",
        "stage2",
        "stage3",
    ]
    assert isinstance(one.features.stage1_attention, CBAM)
    assert one(rand(2, 1, 28, 28)).shape == (2, 10)
    assert SmallCNN(widths=SMALL, attention="gc", insert_after="stage3").features.stage3_attention


@pytest.mark.parametrize("plain", [None, "none"])
def test_small_cnn_plain_has_no_attention(plain: str | None) -> None:
    model = SmallCNN(widths=SMALL, attention=plain)
    assert [n for n, _ in model.features.named_children()] == ["stage1", "stage2", "stage3"]
    assert model.stn is None


def test_small_cnn_attention_kwargs_reach_the_blocks() -> None:
    model = SmallCNN(
        widths=SMALL, attention="nonlocal", attention_kwargs={"pairwise": "dot_product"}
    )
    blocks = [m for m in model.modules() if isinstance(m, NonLocalBlock)]
    assert len(blocks) == 2 and all(b.pairwise == "dot_product" for b in blocks)
    with pytest.raises(TypeError):
        SmallCNN(widths=SMALL, attention="se", attention_kwargs={"no_such_arg": 1})


def test_small_cnn_identity_blocks_leave_the_output_unchanged_at_init() -> None:
    torch.manual_seed(0)
    plain = SmallCNN(widths=SMALL).eval()
    torch.manual_seed(0)
    with_gc = SmallCNN(widths=SMALL, attention="gc").eval()
    with_gc.load_state_dict(plain.state_dict(), strict=False)
    x = rand(2, 1, 28, 28)
    torch.testing.assert_close(with_gc(x), plain(x))


def test_small_cnn_unknown_attention_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="valid names") as err:
        SmallCNN(attention="squeeze")
    for name in ("se", "cbam", "nonlocal", "gc"):
        assert name in str(err.value)
    with pytest.raises(ValueError, match="not a drop-in block"):
        SmallCNN(attention="stn")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"insert_after": ("stage4",)}, "stage4"),
        ({"widths": ()}, "widths"),
        ({"widths": (8, 0)}, "widths"),
        ({"input_size": (28,)}, "input_size"),
        ({"num_classes": 0}, "num_classes"),
        ({"in_channels": 0}, "in_channels"),
        ({"convs_per_stage": 0}, "convs_per_stage"),
        ({"stn": "affine"}, "stn"),
        ({"attention": "se", "attention_kwargs": [("reduction", 4)]}, "attention_kwargs"),
    ],
)
def test_small_cnn_bad_args_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SmallCNN(**kwargs)


def test_small_cnn_bad_input_raises() -> None:
    model = SmallCNN(widths=SMALL, input_size=(28, 28))
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        model(rand(2, 1, 60, 60))
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        model(rand(2, 3, 28, 28))


@pytest.mark.parametrize("mode", ["affine", "attention"])
def test_small_cnn_stn_front_end(mode: str) -> None:
    model = SmallCNN(
        input_size=(60, 60),
        widths=SMALL,
        attention="se",
        stn={"mode": mode, "output_size": (40, 40)},
    )
    assert isinstance(model.stn, SpatialTransformer)
    assert model.stn.input_size == (60, 60) and model.stn.mode == mode
    x = rand(3, 1, 60, 60)
    out = model(x)
    assert out.shape == (3, 10)
    assert model.stn.last_theta.shape == (3, 2, 3)
    warped, theta = model.stn.transform(x)  # what a trainer logs
    assert warped.shape == (3, 1, 40, 40) and theta.shape == (3, 2, 3)
    out.sum().backward()
    assert model.stn.fc_theta.bias.grad is not None
    assert model.stn.fc_theta.bias.grad.abs().sum() > 0


def test_small_cnn_train_step_reduces_loss() -> None:
    torch.manual_seed(0)
    model = SmallCNN(input_size=(28, 28), widths=SMALL, attention="cbam", stn={})
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = rand(8, 1, 28, 28), torch.arange(8) % 10
    losses = []
    for _ in range(5):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_small_cnn_float64() -> None:
    model = SmallCNN(widths=SMALL, attention="nonlocal", stn={}).double()
    out = model(rand(2, 1, 28, 28).double())
    assert out.dtype == torch.float64


def test_resnet18_with_se_forward() -> None:
    torch.manual_seed(0)
    model = resnet_with_attention("resnet18", num_classes=200, attention="se")
    se_blocks = [m for m in model.modules() if isinstance(m, SqueezeExcitation)]
    assert len(se_blocks) == 8  # one per BasicBlock
    first = model.layer1[0].bn2
    assert isinstance(first, nn.Sequential) and isinstance(first[0], nn.BatchNorm2d)
    assert isinstance(first[1], SqueezeExcitation) and first[1].channels == 64
    assert model.layer4[1].bn2[1].channels == 512
    out = model(rand(2, 3, 64, 64))
    assert out.shape == (2, 200) and torch.isfinite(out).all()


def test_resnet50_bottleneck_placement() -> None:
    model = resnet_with_attention("resnet50", num_classes=10, attention="gc")
    gcs = [m for m in model.modules() if isinstance(m, GlobalContextBlock)]
    assert len(gcs) == 16  # 3 + 4 + 6 + 3 bottlenecks
    assert model.layer1[0].bn3[1].channels == 256
    assert model.layer4[2].bn3[1].channels == 2048
    assert model.fc.out_features == 10


def test_resnet_identity_blocks_keep_the_plain_resnet_output() -> None:
    torch.manual_seed(0)
    plain = resnet_with_attention("resnet18", num_classes=5).eval()
    with_nl = resnet_with_attention("resnet18", num_classes=5, attention="nonlocal").eval()
    # Map the plain weights onto the wrapped names (bn2 -> bn2.0).
    state = {k.replace(".bn2.", ".bn2.0."): v for k, v in plain.state_dict().items()}
    missing, unexpected = with_nl.load_state_dict(state, strict=False)
    assert not unexpected and all(".bn2.1." in k for k in missing)
    x = rand(1, 3, 32, 32)
    torch.testing.assert_close(with_nl(x), plain(x))


def test_resnet_plain_and_bad_args() -> None:
    plain = resnet_with_attention("resnet18", num_classes=3, attention="none")
    assert isinstance(plain.layer1[0].bn2, nn.BatchNorm2d)
    assert plain.fc.out_features == 3
    with pytest.raises(ValueError, match="resnet18"):
        resnet_with_attention("vgg16")
    with pytest.raises(ValueError, match="valid names"):
        resnet_with_attention("resnet18", attention="squeeze")
    with pytest.raises(ValueError, match="num_classes"):
        resnet_with_attention("resnet18", num_classes=0)


def test_resnet_pretrained_requests_default_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = torchvision.models.get_model

    def fake(name: str, weights=None, **kw):
        calls.append((name, weights))
        return real(name, weights=None, **kw)  # no download in tests

    monkeypatch.setattr(torchvision.models, "get_model", fake)
    model = resnet_with_attention("resnet18", num_classes=4, attention="se", pretrained=True)
    assert calls == [("resnet18", "DEFAULT")]
    assert model.fc.out_features == 4


def test_count_parameters() -> None:
    lin = nn.Linear(3, 4)
    assert count_parameters(lin) == 16
    shared = nn.Sequential(lin, nn.ReLU(), lin)
    assert count_parameters(shared) == 16  # shared weights counted once
    lin.bias.requires_grad_(False)
    assert count_parameters(lin, trainable_only=True) == 12
    assert count_parameters(lin) == 16
    assert count_parameters(resnet_with_attention("resnet18", num_classes=1000)) == 11_689_512
    with pytest.raises(ValueError, match=r"nn\.Module"):
        count_parameters(torch.zeros(3))


def test_attention_adds_parameters() -> None:
    plain = count_parameters(SmallCNN(widths=SMALL))
    for name in ("se", "cbam", "nonlocal", "gc"):
        assert count_parameters(SmallCNN(widths=SMALL, attention=name)) > plain, name


def test_every_registered_block_fits_in_small_cnn() -> None:
    x = rand(2, 1, 28, 28)
    for name in soft_baselines.list_modules("block"):
        torch.manual_seed(0)
        model = SmallCNN(widths=SMALL, attention=name)
        assert model(x).shape == (2, 10), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_backbones_cuda_and_autocast(attention: str | None) -> None:
    model = SmallCNN(input_size=(60, 60), widths=SMALL, attention=attention, stn={}).cuda()
    x = rand(2, 1, 60, 60).cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        out = model(x)
    assert out.device.type == "cuda" and torch.isfinite(out).all()
    out.float().sum().backward()
    resnet = resnet_with_attention("resnet18", num_classes=5, attention=attention).cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        assert resnet(torch.randn(2, 3, 64, 64, device="cuda")).shape == (2, 5)


@pytest.mark.parametrize(("size", "resize"), [((28, 28), (20, 20)), ((60, 40), (15, 10))])
def test_smallcnn_resize_to_is_what_the_first_conv_sees(size, resize):
    net = SmallCNN(input_size=size, widths=(4, 8), insert_after=(), resize_to=resize)
    seen = []
    first = net.features.stage1[0]
    first.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape)))
    x = torch.rand(3, 1, *size)
    assert net(x).shape == (3, 10)
    assert seen == [(3, 1, *resize)]
    assert net.seen_size == resize and net.pixels_seen == resize[0] * resize[1]
    # area interpolation: the mean over each output pixel's footprint
    down = torch.nn.functional.adaptive_avg_pool2d(x, resize)
    out = {}

    def keep(module: nn.Module, inp: tuple[Tensor, ...], output: Tensor) -> None:
        out.setdefault("x", inp[0])

    first.register_forward_hook(keep)
    net(x)
    torch.testing.assert_close(out["x"], down)
    plain = SmallCNN(input_size=size, widths=(4, 8), insert_after=())
    assert plain.seen_size == size and plain.pixels_seen == size[0] * size[1]


def test_smallcnn_resize_to_feeds_the_stn_the_small_image():
    net = SmallCNN(input_size=(28, 28), widths=(4, 8), insert_after=(), resize_to=(14, 14), stn={})
    assert net.stn.input_size == (14, 14) and net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="resize_to"):
        SmallCNN(resize_to=(0, 5))
