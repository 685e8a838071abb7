"""``scripts/evaluate_hard.py``: re-evaluating a finished run with other settings."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from agents.config import HardTrainConfig
from agents.train import train_reinforce
from glimpse.experiments.evaluate import EvalConfig, evaluate_run

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
        eval_limit=1000,
        init_location="center",  # single-mean is then deterministic: one seed
        playback=0,
        device="cpu",
        threads=1,
    )
    train_reinforce(cfg)
    return root / "tiny"


def test_same_settings_reproduce_the_runs_test_metrics(run_dir):
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["protocol"] in ("single-mean", "single-sampled")
    result = evaluate_run(EvalConfig(str(run_dir)))  # single-mean, centre: deterministic
    assert result["protocol"] == "single-mean" and result["eval_seeds"] == [0]
    assert result["error"] == pytest.approx(
        saved["protocols"]["single-mean"]["test_error"], abs=1e-9
    )
    assert (run_dir / "evaluations" / "test-best-single-mean-center.json").is_file()
    sampled = evaluate_run(EvalConfig(str(run_dir), protocol="single-sampled"))
    assert sampled["errors"] == saved["protocols"]["single-sampled"]["test_errors"]
    assert len(sampled["errors"]) == 5 and len(set(sampled["errors"])) > 1  # the seeds differ
    assert sampled["error"] == pytest.approx(sum(sampled["errors"]) / 5)


def test_all_protocols_match_the_trainers_report_and_ignore_the_batch_size(run_dir):
    saved = json.loads((run_dir / "metrics.json").read_text())["protocols"]
    a = evaluate_run(EvalConfig(str(run_dir), all_protocols=True, eval_batch_size=500))
    b = evaluate_run(EvalConfig(str(run_dir), all_protocols=True, eval_batch_size=128))
    assert a["protocols"] == b["protocols"] == saved
    written = json.loads((run_dir / "evaluations" / "protocols-best.json").read_text())
    assert written["protocols"] == saved
    other = evaluate_run(
        EvalConfig(str(run_dir), all_protocols=True, init_location="random", eval_seeds=2)
    )
    assert other["init_location"] == "random"
    assert other["protocols"]["single-mean"]["eval_seeds"] == [0, 1]
    kept = json.loads((run_dir / "evaluations" / "protocols-best-random.json").read_text())
    assert kept["protocols"] == other["protocols"]
    unchanged = json.loads((run_dir / "evaluations" / "protocols-best.json").read_text())
    assert unchanged["protocols"] == saved  # the run's own protocol file is left alone


def test_monte_carlo_and_random_start_through_the_script(run_dir):
    spec = importlib.util.spec_from_file_location("ev", REPO / "scripts" / "evaluate_hard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = [str(run_dir), "--mc-samples", "3", "--init-location", "random", "--split", "val"]
    args += ["--eval-seeds", "2"]
    result = module.main(args)
    assert result["mc_samples"] == 3 and result["init_location"] == "random"
    assert result["protocol"] == "mc" and result["eval_seeds"] == [0, 1]
    single = module.main(args[:1] + args[3:] + ["--protocol", "single-sampled"])
    assert single["errors"] != result["errors"]  # three samples per image, not one
    written = json.loads((run_dir / "evaluations" / "val-best-mc3-random.json").read_text())
    assert written["errors"] == result["errors"]
    assert module.main(args)["errors"] == result["errors"]  # seeded: reproducible


def test_bad_input_is_a_clear_error(run_dir, tmp_path):
    with pytest.raises(ValueError, match="mc_samples must be >= 1"):
        evaluate_run(EvalConfig(str(run_dir), mc_samples=0))
    with pytest.raises(ValueError, match="eval_seeds must be >= 1"):
        evaluate_run(EvalConfig(str(run_dir), eval_seeds=0))
    with pytest.raises(ValueError, match="mc-samples >= 2"):
        evaluate_run(EvalConfig(str(run_dir), protocol="mc", mc_samples=1))
    with pytest.raises(ValueError, match=r"not found|not a run folder|does not exist"):
        evaluate_run(EvalConfig(str(tmp_path)))
