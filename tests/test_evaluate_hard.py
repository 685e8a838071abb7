"""``scripts/evaluate_hard.py``: re-evaluating a finished run with other settings."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from agents.evaluate import EvalConfig, evaluate_run
from agents.train import HardTrainConfig, train_reinforce

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run_dir(data_root, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    cfg = HardTrainConfig(
        data_root=str(data_root),
        runs_root=str(root),
        run_name="tiny",
        epochs=1,
        max_batches_per_epoch=20,
        batch_size=64,
        val_size=500,
        eval_batch_size=500,
        playback=0,
        device="cpu",
        threads=1,
    )
    train_reinforce(cfg)
    return root / "tiny"


def test_same_settings_reproduce_the_runs_test_metrics(run_dir):
    saved = json.loads((run_dir / "metrics.json").read_text())
    result = evaluate_run(EvalConfig(str(run_dir)))
    assert result["accuracy"] == pytest.approx(saved["test_accuracy"], abs=1e-9)
    assert (run_dir / "evaluations" / "test-best-mc1-center.json").is_file()


def test_monte_carlo_and_random_start_through_the_script(run_dir):
    spec = importlib.util.spec_from_file_location("ev", REPO / "scripts" / "evaluate_hard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = [str(run_dir), "--mc-samples", "3", "--init-location", "random", "--split", "val"]
    result = module.main(args)
    assert result["mc_samples"] == 3 and result["init_location"] == "random"
    assert 0.0 <= result["accuracy"] <= 1.0
    written = json.loads((run_dir / "evaluations" / "val-best-mc3-random.json").read_text())
    assert written["accuracy"] == result["accuracy"]
    assert module.main(args)["accuracy"] == result["accuracy"]  # seeded: reproducible


def test_bad_input_is_a_clear_error(run_dir, tmp_path):
    with pytest.raises(ValueError, match="mc_samples must be >= 1"):
        evaluate_run(EvalConfig(str(run_dir), mc_samples=0))
    with pytest.raises(ValueError, match=r"not found|not a run folder|does not exist"):
        evaluate_run(EvalConfig(str(tmp_path)))
