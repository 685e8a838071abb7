"""``agents.train``, the REINFORCE trainer: resume, warm start, seeding, trajectory
summaries read back from the event file, first fixations of training batches, the
command-line scripts (also on ``twodigit100``) and the learning test of the issue (a
10k-image MNIST subset beyond 90% test accuracy).
"""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glimpse.training import (
    RunExistsError,
    load_checkpoint,
)
from tests.helpers.scripts import COMMON, _run_dir, _script_main

REPO = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------- trainer runs: resume, seeds, trajectories
def _scalars(run_dir: Path, tag: str = "losses/total") -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[int, float] = {}
    for f in sorted(run_dir.glob("events.out.tfevents.*")):  # one file per session
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            out.update({e.step: e.value for e in acc.Scalars(tag)})
    return out


@pytest.fixture(scope="module")
def trainer_runs(data_root, tmp_path_factory):
    """Short trainer runs (3 batches of 32 per epoch, constant lr, every batch logged):

    - ``full``: 2 epochs in one go (seed 0), with trajectory playback;
    - ``resumed``: 1 epoch, then ``--resume`` for the second (seed 0);
    - ``seed1``: 1 epoch with seed 1;
    - ``warm``: 1 epoch warm-started from ``full`` (``init_from``) with a zero learning rate.

    The tests read losses, weights and validation playback, never the final test report:
    val and test are cut to their first 100 images (``eval_limit``; the 3 playback images
    are among them) and the report to one evaluation seed. The final report on the full
    10k test set under 5 seeds was nearly all of this fixture's 65 s (CI).
    """
    from agents.config import HardTrainConfig
    from agents.train import train_reinforce

    root = tmp_path_factory.mktemp("trainer")
    base = {
        "max_batches_per_epoch": 3,
        "batch_size": 32,
        "lr_schedule": "constant",
        "log_every": 1,
        "val_size": 500,
        "eval_limit": 100,
        "eval_seeds": 1,
        "eval_batch_size": 100,
        "data_root": str(data_root),
        "runs_root": str(root),
        "device": "cpu",
        "threads": 1,
        "playback": 0,
    }
    threads = torch.get_num_threads()
    try:
        train_reinforce(HardTrainConfig(epochs=2, run_name="full", **(base | {"playback": 3})))
        train_reinforce(HardTrainConfig(epochs=1, run_name="resumed", **base))
        train_reinforce(HardTrainConfig(epochs=2, run_name="resumed", resume=True, **base))
        train_reinforce(HardTrainConfig(epochs=1, run_name="seed1", seed=1, **base))
        warm = {"run_name": "warm", "init_from": str(root / "full"), "lr": 0.0}
        train_reinforce(HardTrainConfig(epochs=1, **warm, **base))
    finally:
        torch.set_num_threads(threads)
    return root


def test_trainer_resume_gives_the_same_next_losses(trainer_runs):
    full = _scalars(trainer_runs / "full")
    resumed = _scalars(trainer_runs / "resumed")
    assert sorted(full) == [32 * i for i in range(1, 7)]
    assert resumed == full  # bitwise: the second epoch after a resume is the same
    # ... and so are the weights saved at the end.
    a = torch.load(trainer_runs / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(trainer_runs / "resumed" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_warm_start_begins_from_the_checkpoint_weights(trainer_runs):
    best = torch.load(trainer_runs / "full" / "best.pt", weights_only=True)["model"]
    warm = torch.load(trainer_runs / "warm" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(best[k], warm[k]) for k in best)  # lr 0: nothing moved
    # ... and the training losses are those of the trained weights, not of a fresh start
    fresh, started = _scalars(trainer_runs / "full"), _scalars(trainer_runs / "warm")
    assert started[32] != fresh[32]
    assert json.loads((trainer_runs / "warm" / "config.json").read_text())["init_from"]


def test_warm_start_refuses_a_missing_or_mismatched_checkpoint(trainer_runs, data_root):
    from agents.config import HardTrainConfig
    from agents.train import train_reinforce

    with pytest.raises(FileNotFoundError, match=r"--init-from .*nowhere"):
        HardTrainConfig(init_from=str(trainer_runs / "nowhere")).resolved()
    cfg = HardTrainConfig(
        init_from=str(trainer_runs / "full"),
        hidden=32,  # the checkpoint's core has 256 units
        **{"epochs": 1, "max_batches_per_epoch": 1, "batch_size": 8, "playback": 0},
        **{"data_root": str(data_root), "runs_root": str(trainer_runs), "run_name": "bad"},
        **{"device": "cpu", "val_size": 500, "eval_limit": 100},
    )
    with pytest.raises(ValueError, match=r"do not fit this model .*\(256, .*\(32, "):
        train_reinforce(cfg)


def test_same_seed_same_losses_other_seed_differs(trainer_runs):
    full = _scalars(trainer_runs / "full")
    # "resumed"'s first session is a separate 1-epoch run with the same seed.
    first_session = sorted((trainer_runs / "resumed").glob("events.out.tfevents.*"))[0]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(first_session), size_guidance={"scalars": 0})
    acc.Reload()
    same = {e.step: e.value for e in acc.Scalars("losses/total")}
    assert same == {s: full[s] for s in (32, 64, 96)}
    other = _scalars(trainer_runs / "seed1")
    assert sorted(other) == [32, 64, 96]
    assert all(other[s] != full[s] for s in other)


def test_trainer_writes_trajectory_playback(trainer_runs):
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(trainer_runs / "full"), size_guidance={"images": 0})
    acc.Reload()
    images = acc.Tags()["images"]
    # One evaluation per epoch, at global steps 96 and 192; T = 6 glimpses each.
    step_tags = sorted(t for t in images if t.startswith("eval/trajectories/steps/"))
    assert step_tags == [f"eval/trajectories/steps/{s:09d}" for s in (96, 192)]
    for tag in step_tags:
        frames = acc.Images(tag)
        assert [f.step for f in frames] == list(range(6))
        first = Image.open(io.BytesIO(frames[0].encoded_image_string))
        assert first.format == "PNG" and first.size == (frames[0].width, frames[0].height)
    videos = acc.Images("eval/trajectories/video")
    assert [v.step for v in videos] == [96, 192]
    gif = Image.open(io.BytesIO(videos[-1].encoded_image_string))
    assert gif.format == "GIF" and gif.n_frames == 6


# ----------------------------------------------------------------------- scripts
def _script(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_scripts_help_lists_the_key_flags():
    # Both scripts at once: most of each call is importing torch.
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(REPO / "scripts" / name), "--help"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("train_ram.py", "train_dram.py")
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (name, err)
        for flag in ("--epochs", "--batch-size", "--lr", "--task", "--agent", "--resume"):
            assert flag in out, (name, flag)
        for flag in ("--seed", "--threads", "--train-limit", "--detach-location"):
            assert flag in out, (name, flag)


@pytest.mark.parametrize(
    ("script", "agent", "paper"), [("train_dram", "dram", 0.05), ("train_ram", "ram", 0.09)]
)
def test_dram_and_ram_train_on_the_dram_papers_pairs_task(
    data_root, tmp_path, script, agent, paper
):
    """Issue 16: the DRAM paper's MNIST pairs task (55 classes, 4 glimpses) trains with
    both agents, each reported beside its figure in the paper's Table 1."""
    args = [*COMMON, "--task", "dram-pairs", "--eval-seeds", "1", "--playback", "0"]
    result = _script_main(
        script, [*args, "--data-root", str(data_root), "--runs-root", str(tmp_path)]
    )
    config = json.loads((_run_dir(tmp_path) / "config.json").read_text())
    assert (config["task"], config["agent"], config["num_glimpses"]) == ("dram-pairs", agent, 4)
    assert result["paper_error"] == pytest.approx(paper)
    assert "1412.7755" in result["paper_ref"] and "Table 1" in result["paper_ref"]


def test_train_ram_script_end_to_end(data_root, tmp_path):
    res = _script(
        str(REPO / "scripts" / "train_ram.py"),
        *("--epochs", "1", "--max-batches-per-epoch", "3", "--batch-size", "32"),
        *("--eval-batch-size", "2500", "--val-size", "500", "--playback", "2"),
        *("--threads", "1", "--device", "cpu", "--runs-root", "tmp", "--run-name", "smoke"),
        *("--data-root", str(data_root)),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    run = tmp_path / "tmp" / "smoke"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["images_seen"] == 3 * 32
    head = metrics["protocols"][metrics["protocol"]]
    assert (
        metrics["test_error"] == head["test_error"] == pytest.approx(1 - metrics["test_accuracy"])
    )
    single = metrics["protocols"]["single-sampled"]
    assert single["eval_seeds"] == [0, 1, 2, 3, 4] and len(single["test_errors"]) == 5
    assert "paper 1.29%" in res.stdout and metrics["paper_error"] == pytest.approx(0.0129)
    assert metrics["command"].startswith("python ") and "train_ram.py" in metrics["command"]
    assert json.loads((run / "config.json").read_text())["agent"] == "ram"
    assert (run / "last.pt").exists()


LEARN_BUDGET = {
    "train_limit": 10000,
    "epochs": 22,
    "batch_size": 64,
    "lr": 1e-3,
    "init_location": "random",
    "seed": 0,
}
"""The issue's learning test: RAM on a 10k-image MNIST subset beyond 90% test accuracy
within about two minutes of one CPU thread (a fixed budget; measured figures in the
test's docstring and docs/RESULTS.md)."""


def test_ram_beats_90_percent_on_a_10k_mnist_subset(data_root, tmp_path):
    """22 epochs over the first 10k training images (3,432 batches of 64), lr 1e-3 with
    the cosine schedule, random first fixations, the other settings the trainer's
    defaults; the budget includes a 5k-image validation pass per epoch and the 10k-image
    test, read under one evaluation seed (the final report's other four seeds only
    repeated the same 2 protocols x 15k episodes).

    Measured 2026-12-02 on the 2-core machine (1 thread; the three seeds in parallel
    beside 4-6 other jobs, load 8-9): seeds 0/1/2 gave 92.05/93.21/93.99% test accuracy
    in 214/215/216 s of CPU (1415 s wall) each; CPU seconds under that load are inflated
    and not comparable with the earlier figures. Earlier budgets, same machine: 25 epochs
    and 5 evaluation seeds gave 92.7/93.6/93.1% in 99/101/102 CPU s (three processes on
    the two cores); 16 epochs gave 90.90/92.81% on seeds 0/1 (too close to the bar, not
    used). The centre start gave 91.6/92.1/89.7% at 25 epochs, so it is not used here.
    """
    from agents.config import HardTrainConfig
    from agents.train import train_reinforce

    result = train_reinforce(
        HardTrainConfig(
            **LEARN_BUDGET,
            threads=1,
            device="cpu",
            data_root=str(data_root),
            run_name="learn10k",
            runs_root=str(tmp_path),
            playback=0,
            eval_batch_size=2500,
            eval_seeds=1,
        )
    )
    assert result["test_accuracy"] > 0.90, result


def test_training_first_fixations_resume_and_torchrun_safe(monkeypatch):
    """Training batches draw their random first fixations from the global episode number:
    a resumed run (same ``global_step``) repeats them, and two ranks of 16 (interleaved
    positions, as their index streams are sharded) get those of one process of 32."""
    import agents.train as train_module
    from agents.config import HardTrainConfig
    from agents.train import train_first_fixations

    cfg = HardTrainConfig(batch_size=32)
    one = train_first_fixations(cfg, 64)["init_loc"]
    assert one.shape == (32, 2) and one.std(0).min() > 0.3
    assert torch.equal(one, train_first_fixations(cfg, 64)["init_loc"])
    assert not torch.equal(one, train_first_fixations(cfg, 96)["init_loc"])
    half = HardTrainConfig(batch_size=16)
    monkeypatch.setattr(train_module.distributed, "world_size", lambda: 2)
    parts = []
    for r in (0, 1):
        monkeypatch.setattr(train_module.distributed, "rank", lambda r=r: r)
        parts.append(train_first_fixations(half, 64)["init_loc"])
    assert torch.equal(torch.stack(parts, 1).reshape(32, 2), one)  # position 2j + r
    assert train_first_fixations(HardTrainConfig(init_location="center"), 0) is None


# ------------------------------------------------------------------ the scripts
def test_train_ram_script_on_twodigit100(data_root, tmp_path):
    args = [*COMMON, "--task", "twodigit100", "--data-root", str(data_root), "--hidden", "32"]
    result = _script_main("train_ram", [*args, "--playback", "2", "--runs-root", str(tmp_path)])
    run_dir = _run_dir(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result))  # nested: per-protocol results
    assert metrics["images_seen"] == 2 * 16
    head = metrics["protocols"][metrics["protocol"]]
    assert (
        metrics["test_error"] == head["test_error"] == pytest.approx(1 - metrics["test_accuracy"])
    )
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["task"], config["num_glimpses"], config["glimpse_size"]) == (
        "twodigit100",
        8,
        12,
    )
    model = load_checkpoint(run_dir / "last.pt")["model"]
    assert model["classifier.weight"].shape == (100, 32)


@pytest.mark.usefixtures("one_torch_thread")
def test_train_ram_resume_continues_where_it_stopped(data_root, tmp_path):
    from agents.config import HardTrainConfig
    from agents.train import train_reinforce

    base = {
        "max_batches_per_epoch": 3,
        "batch_size": 32,
        "data_root": str(data_root),
        "run_name": "res",
        "runs_root": str(tmp_path),
        "playback": 0,
        "device": "cpu",
        "eval_batch_size": 2500,
    }
    first = train_reinforce(HardTrainConfig(epochs=1, **base))
    assert first["images_seen"] == 3 * 32
    with pytest.raises(RunExistsError):
        train_reinforce(HardTrainConfig(epochs=2, **base))
    second = train_reinforce(HardTrainConfig(epochs=2, resume=True, **base))
    assert second["images_seen"] == 2 * 3 * 32
    with pytest.raises(FileNotFoundError, match="no run folder"):
        train_reinforce(HardTrainConfig(epochs=1, resume=True, **(base | {"run_name": "none"})))
    assert not (tmp_path / "none").exists()


def test_std_schedule_is_a_cosine_from_std_to_std_final():
    from agents.config import HardTrainConfig
    from agents.train import std_schedule

    cfg = HardTrainConfig(std=0.3, std_final=0.1)
    values = [std_schedule(cfg, u, 11) for u in range(11)]
    assert values[0] == pytest.approx(0.3) and values[-1] == pytest.approx(0.1)
    assert values[5] == pytest.approx(0.2)  # half way
    assert all(a > b for a, b in itertools.pairwise(values))
    assert std_schedule(HardTrainConfig(std=0.3), 7, 11) == 0.3  # unset: constant


def test_training_anneals_sigma_and_checkpoints_keep_it(data_root, tmp_path):
    """``--std-final``: the σ logged after each update follows the cosine, and the last
    checkpoint holds the final σ (sampled evaluation and resume read it from there)."""
    from agents.config import HardTrainConfig
    from agents.train import std_schedule, train_reinforce

    cfg = HardTrainConfig(
        epochs=2,
        max_batches_per_epoch=3,
        batch_size=32,
        log_every=1,
        val_size=500,
        eval_limit=100,
        eval_seeds=1,
        eval_batch_size=100,
        data_root=str(data_root),
        runs_root=str(tmp_path),
        run_name="anneal",
        device="cpu",
        threads=1,
        playback=0,
        std=0.3,
        std_final=0.05,
    )
    train_reinforce(cfg)
    logged = _scalars(tmp_path / "anneal", "charts/std")
    expected = [std_schedule(cfg, u, 6) for u in range(6)]
    assert [round(logged[k], 5) for k in sorted(logged)] == [round(v, 5) for v in expected]
    last = torch.load(tmp_path / "anneal" / "last.pt", weights_only=True)["model"]
    assert last["log_std"].exp().tolist() == pytest.approx([0.05, 0.05])


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"learn_std": True}, "cannot be combined with a learned σ"),
        ({"agent": "glimpse-grid"}, "glimpse-grid's fixed locations"),
        ({"std_final": 0.0}, "--std-final must be"),
    ],
)
def test_std_final_refuses_what_it_cannot_anneal(kw, message):
    from agents.config import HardTrainConfig

    with pytest.raises(ValueError, match=message):
        HardTrainConfig(**({"std_final": 0.05} | kw)).resolved()


def test_ppo_refuses_std_final():
    from agents.config import PPOTrainConfig

    with pytest.raises(ValueError, match="REINFORCE option"):
        PPOTrainConfig(std_final=0.05).resolved()
