"""RAM beyond the basics: log-probs of ``act`` against ``torch.distributions``, which loss
term trains which parameters (on a real rollout), checkpoint round-trip and resume,
seeding, trajectory summaries read back from the event file, the command-line scripts and
the learning test of the issue (a 10k-image MNIST subset beyond 90% test accuracy)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.distributions import Normal

from agents.ram import RAM
from agents.reinforce import ReinforceConfig, collect_rollout, reinforce_loss
from envs import GlimpseVectorEnv, MDPConfig
from glimpse.training import checkpoint_state, lr_scheduler, restore_checkpoint_state

REPO = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _toy_source(n: int = 64, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 1, size, size, generator=g) * 255).to(torch.uint8)
    return images, torch.randint(0, 10, (n,), generator=g)


def _obs(n: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "glimpse": torch.rand(n, 1, 1, 8, 8, generator=g),
        "location": torch.rand(n, 2, generator=g) * 2 - 1,
        "step": torch.zeros(n, 1),
    }


# ------------------------------------------------------------ log-probs of act()
@pytest.mark.parametrize(("core", "learn_std"), [("rnn", False), ("lstm", True)])
def test_act_log_prob_is_the_normal_density_for_interior_actions(core, learn_std):
    torch.manual_seed(0)
    ram = RAM((1, 1, 8, 8), hidden=16, core=core, std=0.6, learn_std=learn_std)
    obs = _obs()
    out = ram.act(obs, ram.initial_state(obs))
    inside = (out.location.abs() < 1).all(1)
    on_bound = (out.location.abs() == 1).any(1)
    # std 0.6 around means near 0: both kinds of action occur in 64 samples.
    assert inside.sum() >= 10 and on_bound.sum() >= 1
    normal = Normal(out.mean, ram.std.expand_as(out.mean))
    expected = normal.log_prob(out.location).sum(-1)
    torch.testing.assert_close(out.log_prob[inside], expected[inside])
    # On a bound the clipped coordinate carries the tail mass (a log-probability <= 0),
    # never the density the unclipped Normal would give.
    assert not torch.allclose(out.log_prob[on_bound], expected[on_bound])
    # The same numbers, and the same gradients, from evaluate_actions (PPO's path).
    again = ram.evaluate_actions(obs, ram.initial_state(obs), out.location)
    torch.testing.assert_close(again.log_prob, out.log_prob)
    (g_act,) = torch.autograd.grad(
        out.log_prob[inside].sum(), ram.locator.weight, retain_graph=True
    )
    (g_ref,) = torch.autograd.grad(expected[inside].sum(), ram.locator.weight)
    torch.testing.assert_close(g_act, g_ref)


def test_act_log_prob_at_a_bound_is_the_tail_mass():
    ram = RAM((1, 1, 8, 8), hidden=16, std=0.3)
    with torch.no_grad():
        ram.locator.weight.zero_()
        ram.locator.bias.copy_(torch.tensor([3.0, -3.0]))  # mean = tanh(+-3), near the corners
    obs = _obs(8)
    loc = torch.tensor([[1.0, -1.0]]).expand(8, 2)
    out = ram.evaluate_actions(obs, ram.initial_state(obs), loc)
    std_normal = Normal(0.0, 1.0)
    mu = out.mean
    expected = (
        std_normal.cdf((mu[:, 0] - 1) / 0.3).log() + std_normal.cdf((-1 - mu[:, 1]) / 0.3).log()
    )
    torch.testing.assert_close(out.log_prob, expected)


# ------------------------------------------------- which loss term trains which weights
def _term_grads(ram: RAM, venv: GlimpseVectorEnv, term: str) -> dict[str, torch.Tensor]:
    """Gradient of one term of the hybrid loss on one real rollout, per parameter.

    ``reinforce_loss`` has no switch for the classification term, so a term's gradient is
    that of ``loss(term on) - loss(term off)``: both share the rollout's graph, and the other
    terms' gradients meet at the rollout tensors as ``g + (-g)``, which is exactly zero.
    """
    torch.manual_seed(1)
    venv.reset(seed=0)
    ro = collect_rollout(ram, venv)
    off = ReinforceConfig(policy_coef=0.0, baseline_coef=0.0, entropy_coef=0.0)
    on = {
        "policy": ReinforceConfig(policy_coef=1.0, baseline_coef=0.0),
        "baseline": ReinforceConfig(policy_coef=0.0, baseline_coef=1.0),
        "classification": off,
    }[term]
    if term == "classification":
        diff = reinforce_loss(ro, on)[0]
    else:
        diff = reinforce_loss(ro, on)[0] - reinforce_loss(ro, off)[0]
    names, params = zip(*ram.named_parameters(), strict=True)
    grads = torch.autograd.grad(diff, params, allow_unused=True)
    return {
        n: torch.zeros_like(p) if g is None else g
        for n, p, g in zip(names, params, grads, strict=True)
    }


def _trained(grads: dict[str, torch.Tensor]) -> set[str]:
    """Modules (first name component) that receive a nonzero gradient."""
    return {n.split(".")[0] for n, g in grads.items() if g.abs().sum() > 0}


@pytest.mark.parametrize("detach_location", [True, False])
def test_each_loss_term_trains_only_its_networks(detach_location):
    """The policy term never reaches the baseline or the classifier head; the baseline term
    reaches only the baseline; classification never reaches the locator or the baseline.

    With ``detach_location=True`` (the trainer's default) REINFORCE trains the locator
    alone. With ``detach_location=False`` (the paper's joint gradient) the policy term also
    flows into the core and the glimpse network, but still not into the classifier head.
    """
    venv = GlimpseVectorEnv(
        _toy_source(), 16, MDPConfig(glimpse_size=8, num_glimpses=4), shuffle=True
    )
    ram = RAM((1, 1, 8, 8), hidden=32, std=0.2, detach_location=detach_location)
    policy = _trained(_term_grads(ram, venv, "policy"))
    if detach_location:
        assert policy == {"locator"}
    else:
        assert policy == {"locator", "glimpse_net", "core"}
    assert _trained(_term_grads(ram, venv, "baseline")) == {"baseline"}
    assert _trained(_term_grads(ram, venv, "classification")) == {
        "glimpse_net",
        "core",
        "classifier",
    }


def test_policy_term_trains_a_learned_std_but_not_the_baseline():
    venv = GlimpseVectorEnv(_toy_source(), 16, MDPConfig(glimpse_size=8, num_glimpses=3))
    ram = RAM((1, 1, 8, 8), hidden=16, learn_std=True, detach_location=True)
    grads = _term_grads(ram, venv, "policy")
    assert grads["log_std"].abs().sum() > 0
    assert grads["baseline.weight"].abs().sum() == 0 and grads["classifier.weight"].abs().sum() == 0


# ----------------------------------------------- checkpoint round-trip (library level)
def _setup(seed: int = 0):
    torch.manual_seed(seed)
    venv = GlimpseVectorEnv(_toy_source(40), 16, MDPConfig(glimpse_size=8, num_glimpses=3))
    venv.reset(seed=seed)
    ram = RAM((1, 1, 8, 8), hidden=16, std=0.2, detach_location=True)
    opt = torch.optim.Adam(ram.parameters(), lr=1e-2)
    sched = lr_scheduler(opt, "cosine", 10)
    return venv, ram, opt, sched


def _train_batch(venv, ram, opt, sched) -> float:
    loss, _ = reinforce_loss(collect_rollout(ram, venv))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss.item()


def test_checkpoint_round_trip_mid_epoch_gives_the_same_next_losses(tmp_path):
    """Save after 3 batches (mid-epoch: 40 images, 16 per batch), restore into fresh
    objects from a ``weights_only`` file: the next batches match an uninterrupted run
    bitwise (model, Adam, schedule, torch RNG and the image stream all restored)."""
    venv, ram, opt, sched = _setup()
    for _ in range(3):
        _train_batch(venv, ram, opt, sched)
    state = checkpoint_state(ram, opt, sched, stream=venv.stream.state_dict())
    torch.save(state, tmp_path / "ck.pt")
    uninterrupted = [_train_batch(venv, ram, opt, sched) for _ in range(3)]

    venv2, ram2, opt2, sched2 = _setup(seed=7)  # different weights, stream and RNG
    loaded = torch.load(tmp_path / "ck.pt", weights_only=True)
    restore_checkpoint_state(loaded, ram2, opt2, sched2)
    venv2.stream.load_state_dict(loaded["stream"])
    resumed = [_train_batch(venv2, ram2, opt2, sched2) for _ in range(3)]
    assert resumed == uninterrupted
    # Without the stream state the next batch holds other images: the state matters.
    venv3, ram3, opt3, sched3 = _setup(seed=7)
    restore_checkpoint_state(loaded, ram3, opt3, sched3)
    assert _train_batch(venv3, ram3, opt3, sched3) != uninterrupted[0]


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
        "eval_batch_size": 2500,
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


# ---------------------------------------------------------------------- learning
def test_train_limit_takes_the_first_images(data_root):
    from agents.config import HardTrainConfig
    from agents.environments import build_envs

    cfg = HardTrainConfig(
        data_root=str(data_root), train_limit=1000, val_size=500, run_name="x"
    ).resolved()
    train, evals = build_envs(cfg, torch.device("cpu"))
    full, _ = build_envs(HardTrainConfig(data_root=str(data_root), val_size=500).resolved(), "cpu")
    assert len(train.source) == 1000 and len(evals["test"].source) == 10000
    assert torch.equal(train.source.images, full.source.images[:1000])
    with pytest.raises(ValueError, match="--train-limit must be >= 0, got -1"):
        HardTrainConfig(train_limit=-1).resolved()


LEARN_BUDGET = {
    "train_limit": 10000,
    "epochs": 25,
    "batch_size": 64,
    "lr": 1e-3,
    "init_location": "random",
    "seed": 0,
}
"""The issue's learning test: RAM on a 10k-image MNIST subset beyond 90% test accuracy
within about two minutes of one CPU thread (a fixed budget; measured figures in the
test's docstring and docs/RESULTS.md)."""


def test_ram_beats_90_percent_on_a_10k_mnist_subset(data_root, tmp_path):
    """25 epochs over the first 10k training images (3,900 batches of 64), lr 1e-3 with
    the cosine schedule, random first fixations, the other settings the trainer's
    defaults; the budget includes a 5k-image validation pass per epoch and the 10k-image
    test.

    Measured on the 2-core machine (1 thread, three processes sharing it): seeds 0/1/2
    gave 92.7/93.6/93.1% test accuracy in 99/101/102 s of CPU each. The centre start
    gave 91.6/92.1/89.7% with the same budget, so it is not used here.
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
        )
    )
    assert result["test_accuracy"] > 0.90, result
