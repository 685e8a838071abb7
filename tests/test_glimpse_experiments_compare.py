"""The hard-versus-soft comparison (glimpse.experiments.compare, scripts/compare.py) and
counted FLOPs (glimpse.flops): a tiny real comparison on MNIST, missing methods and
datasets, reuse and resume of runs, and FLOPs against hand counts."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import nn

from glimpse.experiments.compare import (
    QUICK,
    CompareConfig,
    HardMethod,
    Method,
    SoftMethod,
    all_methods,
    merge_comparisons,
    run_comparison,
)
from glimpse.flops import count_flops
from glimpse.training import Run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(out: Path, data_root: Path, **kw: Any) -> CompareConfig:
    """A comparison small enough for a test: 2 batches of 16, one epoch, narrow CNNs."""
    base = {
        "datasets": ("mnist", "cub"),
        "methods": ("ram", "soft-none", "soft-se", "ghost"),
        "seeds": (0,),
        "hard_epochs": 1,
        "soft_epochs": 1,
        "batch_size": 16,
        "max_batches_per_epoch": 2,
        "val_size": 200,
        "soft_widths": (4, 8, 8),
        "flops_batch": 4,
        "throughput_images": 100,
        "eval_batch_size": 1000,
        "out": str(out),
        "data_root": str(data_root),
        "device": "cpu",
    }
    return CompareConfig(**{**base, **kw})


class GhostMethod(Method):
    """A method that cannot run at all (:meth:`Method.unavailable`): reported missing."""

    name, kind = "ghost", "hard"

    def unavailable(self) -> str | None:
        return "agents.no_such_trainer_xyz not found (a test ghost)"

    def make_config(self, cc, dataset, seed, run_dir):
        raise AssertionError("a missing method is never configured")

    def train(self, cfg):
        raise AssertionError("a missing method is never trained")

    def profile(self, cfg, run_dir, cc, device):
        raise AssertionError("a missing method is never measured")


def methods_with_ghost() -> dict[str, Method]:
    methods = all_methods()
    methods["ghost"] = GhostMethod()
    return methods


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory, data_root: Path):
    out = tmp_path_factory.mktemp("compare")
    cc = tiny(out, data_root)
    return cc, run_comparison(cc, methods_with_ghost())


def test_table_rows_files_and_plots(compared) -> None:
    cc, rows = compared
    by = {(r["dataset"], r["method"]): r for r in rows}
    assert [(r["dataset"], r["method"]) for r in rows][:4] == [
        ("mnist", "ram"),
        ("mnist", "soft-none"),
        ("mnist", "soft-se"),
        ("mnist", "ghost"),
    ]
    for name in ("ram", "soft-none", "soft-se"):
        r = by["mnist", name]
        assert r["status"] == "ok" and r["seeds"] == 1
        saved = json.loads((Path(r["runs"][0]["run"]) / "metrics.json").read_text())
        assert r["test_accuracy"] == saved["test_accuracy"] and r["test_accuracy_std"] is None
        assert r["flops_per_image"] > 0 and r["images_per_s"] > 0 and r["train_seconds"] > 0
        metrics = json.loads((Path(r["runs"][0]["run"]) / "metrics.json").read_text())
        assert r["test_accuracy"] == metrics["test_accuracy"]  # the trainer's shared evaluation
    ram, none, se = by["mnist", "ram"], by["mnist", "soft-none"], by["mnist", "soft-se"]
    assert ram["kind"] == "hard" and none["kind"] == "soft"
    assert ram["pixels_per_image"] == 6 * 1 * 8**2  # T glimpses x k scales x g^2
    assert none["pixels_per_image"] == se["pixels_per_image"] == 28 * 28
    assert se["params"] > none["params"] and se["flops_per_image"] > none["flops_per_image"]
    assert by["mnist", "ghost"]["status"].startswith("missing: agents.no_such_trainer_xyz")
    cub = [r for r in rows if r["dataset"] == "cub"]
    if not (Path(cc.data_root) / "CUB_200_2011").is_dir():
        assert len(cub) == 1 and cub[0]["status"].startswith("missing: CUB-200-2011 not found")

    out = Path(cc.out)
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    assert float(table[0]["test_accuracy"]) == pytest.approx(ram["test_accuracy"])
    md = (out / "results.md").read_text()
    assert "| mnist | soft-se | soft |" in md and "| mnist | ghost | missing:" in md
    for png in ("accuracy_vs_pixels.png", "accuracy_vs_flops.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.width > 300
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["methods"] == list(cc.methods)


def test_ram_flops_equal_a_hand_count(compared) -> None:
    """RAM on MNIST (Mnih et al. 2014 sizes): per glimpse step, 2 x multiply-accumulates of
    what (64->128), where (2->128), both to 256, the RNN core (256+256 -> 256) and the
    location (2), classifier (10) and baseline (1) heads; 6 steps. The retina adds 0."""
    _, rows = compared
    ram = next(r for r in rows if r["method"] == "ram")
    step = 2 * (64 * 128 + 2 * 128 + 128 * 256 + 128 * 256 + 2 * 256 * 256 + 256 * (2 + 10 + 1))
    assert ram["flops_per_image"] == 6 * step


def test_soft_flops_equal_a_hand_count(compared) -> None:
    """SmallCNN widths 4-8-8, two 3x3 convs per stage, on 28x28 (pooled 14, 7, 4), then the
    10-way head: 2 x multiply-accumulates of each conv and the linear layer."""
    _, rows = compared
    none = next(r for r in rows if r["method"] == "soft-none")
    convs = [(1, 4, 28), (4, 4, 28), (4, 8, 14), (8, 8, 14), (8, 8, 7), (8, 8, 7)]
    hand = sum(2 * cin * 9 * cout * s * s for cin, cout, s in convs) + 2 * 8 * 10
    assert none["flops_per_image"] == hand


def test_count_flops_hand_counts() -> None:
    assert count_flops(lambda: nn.Linear(5, 3)(torch.zeros(4, 5)))[0] == 2 * 4 * 5 * 3
    conv = nn.Conv2d(1, 2, 3)
    assert count_flops(lambda: conv(torch.zeros(1, 1, 5, 5)))[0] == 2 * (2 * 3 * 3) * 9
    flops, out = count_flops(lambda: torch.zeros(3).relu())
    assert flops == 0 and out.shape == (3,)


def test_retina_adds_no_counted_flops() -> None:
    from envs import GlimpseVectorEnv, ImageSource, MDPConfig

    src = ImageSource(torch.rand(4, 1, 28, 28), torch.arange(4))
    venv = GlimpseVectorEnv(src, 4, MDPConfig(glimpse_size=8, num_scales=3, num_glimpses=2))

    def episode() -> None:
        venv.reset(seed=0)
        for _ in range(2):
            venv.step({"location": torch.zeros(4, 2), "label": torch.zeros(4, dtype=torch.long)})

    assert count_flops(episode)[0] == 0


def test_rerun_reuses_finished_runs(compared, monkeypatch: pytest.MonkeyPatch) -> None:
    cc, rows = compared

    def no_training(self, cfg):
        raise AssertionError(f"retrained {cfg.run_name}")

    monkeypatch.setattr(HardMethod, "train", no_training)
    monkeypatch.setattr(SoftMethod, "train", no_training)
    again = run_comparison(cc, methods_with_ghost())
    ok = [r for r in again if r["status"] == "ok"]
    assert len(ok) == 3 and all(r["runs"][0]["reused"] for r in ok)
    assert [r["test_accuracy"] for r in again] == [r["test_accuracy"] for r in rows]
    assert [r["flops_per_image"] for r in again] == [r["flops_per_image"] for r in rows]
    # other budgets in the same folder: refused, not silently mixed
    with pytest.raises(ValueError, match=r"other settings.*epochs"):
        run_comparison(replace(cc, soft_epochs=2, methods=("soft-none",)), methods_with_ghost())


# ------------------------------------------------------------------ run bookkeeping (fake)


@dataclass
class FakeConfig:
    run_name: str
    runs_root: str
    epochs: int = 1
    resume: bool = False
    seed: int = 0


class FakeMethod(Method):
    """Writes a run folder the way the trainers do; counts its training calls."""

    name, kind = "fake", "soft"

    def __init__(self, crash_after_checkpoint: bool = False) -> None:
        self.calls: list[bool] = []
        self.crash = crash_after_checkpoint

    def make_config(self, cc, dataset, seed, run_dir):
        return FakeConfig(run_dir.name, str(run_dir.parent), cc.soft_epochs, seed=seed)

    def train(self, cfg):
        self.calls.append(cfg.resume)
        run = Run(cfg.run_name, cfg, cfg.runs_root, resume=cfg.resume)
        run.save_checkpoint({"epoch": 1}, "last")
        if self.crash:
            raise KeyboardInterrupt
        metrics = {"test_accuracy": 0.5 + cfg.seed / 10, "train_seconds": 1.0}
        run.write_json("metrics.json", metrics)
        return metrics

    def profile(self, cfg, run_dir, cc, device):
        return {"params": 3, "flops_per_image": 7.0, "pixels_per_image": 9, "images_per_s": 1.0}


def _fake_cc(tmp_path: Path, **kw) -> CompareConfig:
    return CompareConfig(
        datasets=("mnist",), methods=("fake",), out=str(tmp_path), device="cpu", **kw
    )


def test_resume_restart_and_seed_statistics(tmp_path: Path) -> None:
    crashing = FakeMethod(crash_after_checkpoint=True)
    with pytest.raises(KeyboardInterrupt):
        run_comparison(_fake_cc(tmp_path, seeds=(0, 1)), {"fake": crashing})
    assert not (tmp_path / "results.md").exists()  # nothing half-written
    half = tmp_path / "runs" / "fake-mnist-s1"
    half.mkdir()
    (half / "config.json").write_text("{}")  # died before its first checkpoint
    fake = FakeMethod()
    rows = run_comparison(_fake_cc(tmp_path, seeds=(0, 1)), {"fake": fake})
    assert fake.calls == [True, False]  # seed 0 resumed from last.pt, seed 1 restarted
    (row,) = rows
    assert row["seeds"] == 2 and row["test_accuracy"] == pytest.approx(0.55)
    assert row["test_accuracy_std"] == pytest.approx(0.0707107, abs=1e-6)
    assert "55.00 ± 7.07" in (tmp_path / "results.md").read_text()
    run_comparison(_fake_cc(tmp_path, seeds=(0, 1)), {"fake": fake})
    assert fake.calls == [True, False]  # both finished: reused
    assert not list(tmp_path.rglob(".*.tmp"))


def test_config_resolution_and_errors() -> None:
    q = CompareConfig(quick=True).resolved()
    assert q.out == "runs/compare-quick" and q.seeds == (0,) and q.datasets == QUICK["datasets"]
    assert q.hard_epochs == 1 and q.max_batches_per_epoch == QUICK["max_batches_per_epoch"]
    assert set(q.methods) == set(all_methods())
    q2 = CompareConfig(quick=True, seeds=(3, 4), datasets=("cluttered60",)).resolved()
    assert q2.seeds == (3, 4) and q2.datasets == ("cluttered60",)
    full = CompareConfig().resolved()
    assert full.seeds == (0, 1, 2) and full.out == "runs/compare" and "cub" in full.datasets
    names = list(all_methods())
    assert names[:4] == ["ram", "dram", "ppo", "parts"]
    assert {"soft-none", "soft-stn", "soft-se", "soft-cbam"} <= set(names)
    with pytest.raises(ValueError, match=r"unknown method.*soft-nope"):
        CompareConfig(methods=("soft-nope",)).resolved()
    with pytest.raises(ValueError, match=r"unknown dataset.*svhn"):
        CompareConfig(datasets=("svhn",)).resolved()
    with pytest.raises(ValueError, match="seeds"):
        CompareConfig(seeds=()).resolved()
    with pytest.raises(ValueError, match="--batch-size must be >= 1, got 0"):
        CompareConfig(batch_size=0).resolved()


def test_methods_that_do_not_apply_are_na(tmp_path: Path, data_root: Path) -> None:
    cc = tiny(tmp_path, data_root, datasets=("multimnist",), methods=("ram", "soft-se"))
    rows = run_comparison(cc, methods_with_ghost())
    assert [r["status"].split(":")[0] for r in rows] == ["n/a", "n/a"]
    dram = all_methods()["dram"]
    assert dram.not_applicable("mnist", cc.resolved()) is not None
    assert dram.not_applicable("multimnist", cc.resolved()) is None


def test_script_runs_the_comparison(compared, capsys) -> None:
    from scripts.compare import main

    cc, _ = compared
    args = ["--out", cc.out, "--datasets", "mnist", "--methods", "ram", "soft-none"]
    args += ["--seeds", "0", "--hard-epochs", "1", "--soft-epochs", "1", "--batch-size", "16"]
    args += ["--max-batches-per-epoch", "2", "--val-size", "200", "--soft-widths", "4", "8", "8"]
    args += ["--flops-batch", "4", "--throughput-images", "100", "--device", "cpu"]
    args += ["--data-root", cc.data_root]
    rows = main(args)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert "soft-none" in capsys.readouterr().out


def test_merge_combines_comparisons_with_the_same_budgets(tmp_path: Path) -> None:
    from scripts.compare import main

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    run_comparison(_fake_cc(a), {"fake": FakeMethod()})
    # another dataset, run with other threads (how it ran may differ, the budget may not)
    run_comparison(
        replace(_fake_cc(b), datasets=("translated60",), threads=2), {"fake": FakeMethod()}
    )
    run_comparison(replace(_fake_cc(c), soft_epochs=3), {"fake": FakeMethod()})
    ab = tmp_path / "ab"
    rows = main(["--merge", str(a), str(b), "--out", str(ab)])
    assert [(r["dataset"], r["method"]) for r in rows] == [
        ("mnist", "fake"),
        ("translated60", "fake"),
    ]
    md = (ab / "results.md").read_text()
    assert (
        "| mnist | fake | soft | 60.00 ± 10.00 |" in md
        and "| translated60 | fake | soft | 60.00 ± 10.00 |" in md
    )
    saved = json.loads((ab / "results.json").read_text())
    assert saved["config"]["datasets"] == ["mnist", "translated60"]
    assert saved["config"]["merge"] == [str(a), str(b)]
    assert (ab / "results.csv").read_text().count("\n") == 3  # header + 2 rows
    for png in ("accuracy_vs_pixels.png", "accuracy_vs_flops.png"):
        assert (ab / png).stat().st_size > 0
    with pytest.raises(ValueError, match=r"other budgets \(soft_epochs: 20 vs 3\)"):
        merge_comparisons([a, c], tmp_path / "x")
    with pytest.raises(ValueError, match="fake on mnist is in both"):
        merge_comparisons([a, a], tmp_path / "x")
    with pytest.raises(ValueError, match="one of the merged folders"):
        merge_comparisons([a, b], b)
    with pytest.raises(FileNotFoundError, match=r"no results\.json in"):
        merge_comparisons([a, tmp_path / "nothing"], tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit, match="--merge needs --out"):
        main(["--merge", str(a)])


def test_the_matched_controls_are_methods_with_their_configs(tmp_path: Path) -> None:
    """Issue 17's controls: listed, configured for their trainers, and ``lowres-cnn`` at the
    task's glimpse pixel budget ``T x k x g^2``."""
    from glimpse.experiments.compare import LowResMethod, glimpse_pixels

    methods = all_methods()
    controls = ("ram-conv", "glimpse-random", "glimpse-grid", "glimpse-soft", "lowres-cnn")
    assert set(controls) <= set(methods)
    cc = CompareConfig(methods=controls, datasets=("mnist", "multimnist")).resolved()
    for name in ("ram-conv", "glimpse-random", "glimpse-grid", "glimpse-soft"):
        m = methods[name]
        assert m.kind == "hard" and m.not_applicable("mnist", cc) is None
        assert m.not_applicable("multimnist", cc) is not None  # the RAM network: one digit
        cfg = m.make_config(cc, "mnist", 0, tmp_path / name)
        assert cfg.agent == name and cfg.run_name == name
        assert cfg.mdp().differentiable is (name == "glimpse-soft")
    low = methods["lowres-cnn"]
    assert isinstance(low, LowResMethod) and low.kind == "soft"
    assert glimpse_pixels("mnist") == 6 * 1 * 8**2 and glimpse_pixels("cluttered60") == 8 * 3 * 144
    cfg = low.make_config(cc, "mnist", 0, tmp_path / "lowres-cnn")
    assert (cfg.module, cfg.lowres_pixels, cfg.method_name()) == ("none", 384, "lowres-cnn")
    assert methods["soft-none"].make_config(cc, "mnist", 0, tmp_path / "s").lowres_pixels == 0


def test_reused_run_may_lack_a_field_added_later_at_its_default(tmp_path: Path) -> None:
    from glimpse.experiments.compare import _check_same_config
    from glimpse.io import write_json
    from glimpse.training import config_to_dict
    from soft_baselines.train import SoftTrainConfig

    cfg = SoftTrainConfig(run_name="r").resolved()
    saved = config_to_dict(cfg)
    del saved["lowres_pixels"]  # a run written before the field existed
    write_json(tmp_path / "config.json", saved)
    _check_same_config(tmp_path, cfg)
    with pytest.raises(ValueError, match="lowres_pixels: None there, 384 wanted"):
        _check_same_config(tmp_path, SoftTrainConfig(run_name="r", lowres_pixels=384).resolved())
