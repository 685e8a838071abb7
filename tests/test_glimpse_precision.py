"""glimpse.precision (issue 20): the bf16 option's fallback on hardware without native
bfloat16 (one line, fp32), that bf16 autocast keeps a tiny model's predictions within a
stated tolerance of fp32 (emulated on any CPU), that the REINFORCE log-probabilities and
baselines stay fp32 under autocast, and a real run through the one loop."""

from __future__ import annotations

import json

import pytest
import torch

from glimpse import precision
from glimpse.precision import autocast, bf16_supported, resolve_precision

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_unsupported_bf16_falls_back_to_fp32_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    assert resolve_precision("bf16", "cpu") == "fp32"
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "no native bfloat16" in lines[0] and "fp32" in lines[0]
    assert resolve_precision("fp32", "cpu") == "fp32" and capsys.readouterr().out == ""
    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match=r"precision must be one of \('fp32', 'bf16'\)"):
        resolve_precision("fp16", "cpu")


def test_bf16_support_is_what_onednn_reports_on_this_cpu():
    assert bf16_supported("cpu") == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_bf16_autocast_keeps_a_tiny_cnn_and_ram_within_tolerance():
    """A fixed tiny SmallCNN and RAM, fp32 against bf16 autocast (8-bit mantissa: logits
    within 0.1 of fp32's and >= 90% of the argmaxes equal on random inputs)."""
    from agents.ram import RAM
    from soft_baselines.backbones import SmallCNN

    torch.manual_seed(0)
    cnn = SmallCNN(widths=(8, 16, 16)).eval()
    x = torch.rand(64, 1, 28, 28)
    with torch.no_grad():
        ref = cnn(x)
        with autocast("bf16", "cpu"):
            low = cnn(x)
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.1
    assert (low.float().argmax(1) == ref.argmax(1)).float().mean() >= 0.9
    ram = RAM((1, 1, 8, 8), hidden=32, what_dim=16, where_dim=16, glimpse_dim=32)
    obs = {"glimpse": torch.rand(64, 1, 1, 8, 8), "location": torch.rand(64, 2) * 2 - 1}
    with torch.no_grad():
        step = ram.act(obs, ram.initial_state(obs), deterministic=True)
        with autocast("bf16", "cpu"):
            low_step = ram.act(obs, ram.initial_state(obs), deterministic=True)
    assert low_step.logits.dtype == torch.bfloat16
    assert (low_step.logits.float() - step.logits).abs().max() < 0.1
    # the location policy's numbers stay fp32 under autocast
    for name in ("log_prob", "value", "location"):
        assert getattr(low_step, name).dtype == torch.float32, name
    torch.testing.assert_close(low_step.location, step.location, atol=0.05, rtol=0)


def test_a_bf16_run_on_this_machine(data_root, tmp_path, capsys):
    """Through the one loop: where bf16 is native the run trains under autocast (and
    records bf16), elsewhere it says so and records fp32."""
    from agents.config import HardTrainConfig
    from agents.train import train_reinforce

    cfg = HardTrainConfig(
        data_root=str(data_root),
        runs_root=str(tmp_path),
        run_name="bf16",
        precision="bf16",
        epochs=1,
        max_batches_per_epoch=5,
        batch_size=16,
        eval_limit=64,
        eval_batch_size=64,
        eval_seeds=1,
        playback=0,
        threads=1,
        device="cpu",
    )
    result = train_reinforce(cfg)
    saved = json.loads((tmp_path / "bf16" / "config.json").read_text())
    out = capsys.readouterr().out
    if bf16_supported("cpu"):
        assert saved["precision"] == "bf16" and "no native bfloat16" not in out
    else:
        assert saved["precision"] == "fp32" and "no native bfloat16" in out
    assert result["updates"] == 5


def test_conflicting_precision_options_are_refused():
    from agents.config import PPOTrainConfig
    from soft_baselines.train import SoftTrainConfig

    with pytest.raises(ValueError, match="choose one"):
        SoftTrainConfig(amp=True, precision="bf16").resolved()
    with pytest.raises(ValueError, match="SB3's own learn"):
        PPOTrainConfig(algo="sb3-recurrent-ppo", precision="bf16").resolved()
