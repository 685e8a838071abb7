"""glimpse.loop: the one training loop, driven by a tiny method on synthetic data."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from glimpse.data import IndexStream
from glimpse.loop import (
    METRICS_KEYS,
    Budget,
    Method,
    Report,
    Update,
    apply_gradients,
    count_update_flops,
    fit,
)
from glimpse.training import Rule, RunConfig, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass
class ToyConfig(RunConfig):
    """A linear classifier of 2-d points: the smallest thing fit can train."""

    updates: int = 7
    eval_every: int = 3
    batch: int = 8
    lr: float = 0.1
    lr_schedule: str = "cosine"
    device: str = "cpu"
    threads: int = 1
    RULES: ClassVar[dict[str, Rule]] = {}
    RESUMABLE: ClassVar[tuple[str, ...]] = ("updates", "patience")


class ToyMethod(Method):
    name, task = "toy", "points"
    validations: ClassVar[list[int]] = []

    def __init__(self, cfg: ToyConfig, device: torch.device, run: Any) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(64, 2, generator=g)
        self.y = (self.x[:, 0] > 0).long()
        self.model = nn.Linear(2, 2)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr)
        self.stream = IndexStream(64, shuffle=True, seed=cfg.seed)
        self.budget = Budget(cfg.updates, cfg.eval_every, images_per_update=cfg.batch)
        self.cfg = cfg

    def update(self) -> Update:
        idx = self.stream.next(self.cfg.batch)
        logits = self.model(self.x[idx] + 0.1 * torch.randn(len(idx), 2))  # uses the RNG
        loss = nn.functional.cross_entropy(logits, self.y[idx])
        apply_gradients(loss, self.model, self.optimizer, grad_clip=1.0)
        right = (logits.argmax(1) == self.y[idx]).float().mean().item()
        return Update({"losses/total": loss.item(), "train/accuracy": right}, idx)

    def accuracy(self) -> float:
        with torch.no_grad():
            return (self.model(self.x).argmax(1) == self.y).float().mean().item()

    def validate(self) -> dict[str, float]:
        ToyMethod.validations.append(int(self.optimizer.state_dict()["state"] != {}))
        acc = self.accuracy()
        return {"accuracy": acc, "error": 1 - acc}

    def report(self) -> Report:
        err = 1 - self.accuracy()
        return Report(err, "deterministic", {"deterministic": {"test_error": err}}, "best")


def _fit(tmp_path, name: str, **kw) -> dict[str, Any]:
    cfg = ToyConfig(runs_root=str(tmp_path), run_name=name, **kw)
    return fit(ToyMethod, cfg)


def test_blocks_checkpoints_schema_and_flops(tmp_path):
    ToyMethod.validations.clear()
    result = _fit(tmp_path, "a")
    # 7 updates, a validation after updates 3, 6 and 7 (the last block is shorter)
    assert len(ToyMethod.validations) == 3
    run = tmp_path / "a"
    saved = json.loads((run / "metrics.json").read_text())
    assert sorted(saved) == sorted(METRICS_KEYS) and saved == json.loads(json.dumps(result))
    assert (saved["updates"], saved["images_seen"], saved["epochs"]) == (7, 56, 3)
    assert saved["env_steps"] is None and saved["global_step_unit"] == "images"
    # one Linear(2, 2) on 8 rows: forward 2*8*2*2 = 64, backward (grad of input is not
    # needed, grad of weight) 64: 128 per update, times 7
    assert saved["train_flops_per_update"] == 128 and saved["train_flops"] == 7 * 128
    assert saved["protocols"]["deterministic"]["val_error"] == 1 - saved["val_best_accuracy"]
    last = load_checkpoint(run / "last.pt")
    assert (last["updates"], last["epoch"], last["global_step"]) == (7, 3, 56)
    assert last["scheduler"]["last_epoch"] == 7  # the schedule stepped once per update


def test_resume_continues_bit_for_bit(tmp_path):
    """Stopped after its first block and resumed (weights, optimiser, schedule, data order,
    RNG: the update draws noise) equals the run that never stopped. Constant learning rate:
    a cosine over 3 updates is another run than one over 7."""
    const = {"lr_schedule": "constant"}
    straight = _fit(tmp_path, "straight", updates=7, **const)
    _fit(tmp_path, "resumed", updates=3, **const)
    resumed = _fit(tmp_path, "resumed", updates=7, resume=True, **const)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_error"] == straight["test_error"]
    assert (resumed["start_update"], resumed["updates"]) == (3, 7)


def test_budget_rejects_empty_runs():
    with pytest.raises(ValueError, match=r"Budget\.total_updates must be >= 1, got 0"):
        Budget(0, 1, 1)
    assert Budget(10, 4, 2, env_steps_per_update=12, step_unit="env_steps").global_step(3) == 36
    assert Budget(10, 4, 2).global_step(3) == 6 and Budget(10, 4, 2).epochs == 3


def test_count_update_flops_counts_backward_too():
    lin = nn.Linear(5, 3)
    x = torch.randn(4, 5)
    with count_update_flops() as flops:
        lin(x).sum().backward()
    assert flops() == 2 * (2 * 4 * 5 * 3)  # forward and the weight's gradient


class ScriptedMethod(ToyMethod):
    """ToyMethod whose validation accuracies are a script (one per validation)."""

    script: ClassVar[list[float]] = []

    def validate(self) -> dict[str, float]:
        acc = ScriptedMethod.script[len(ToyMethod.validations)]
        ToyMethod.validations.append(1)
        return {"accuracy": acc, "error": 1 - acc}


def test_patience_stops_after_validations_without_improvement_and_resumes(tmp_path):
    ToyMethod.validations.clear()
    ScriptedMethod.script = [0.5, 0.7, 0.6, 0.7, 0.65, 0.9, 0.95]
    cfg = ToyConfig(runs_root=str(tmp_path), run_name="p", updates=21, eval_every=3, patience=3)
    result = fit(ScriptedMethod, cfg)
    # best 0.7 after validation 2 (update 6); 0.6, 0.7 (not better), 0.65: three stale
    assert len(ToyMethod.validations) == 5 and result["updates"] == 15
    assert result["stopped"] == "patience" and result["best_update"] == 6
    assert result["train_flops_to_best"] == 6 * result["train_flops_per_update"]
    assert [h["updates"] for h in result["history"]] == [3, 6, 9, 12, 15]
    assert [h["val_error"] for h in result["history"]] == pytest.approx([0.5, 0.3, 0.4, 0.3, 0.35])
    assert result["val_best_accuracy"] == 0.7
    # a resume with more patience goes on from the same state, history kept
    more = dataclasses.replace(cfg, resume=True, patience=5)
    resumed = fit(ScriptedMethod, more)
    assert resumed["stopped"] == "budget" and resumed["updates"] == 21
    assert [h["updates"] for h in resumed["history"]] == [3, 6, 9, 12, 15, 18, 21]
    assert resumed["best_update"] == 21 and resumed["val_best_accuracy"] == 0.95
    # without patience the whole budget is trained
    ToyMethod.validations.clear()
    plain = fit(ScriptedMethod, dataclasses.replace(cfg, run_name="q", patience=0))
    assert plain["stopped"] == "budget" and plain["updates"] == 21
