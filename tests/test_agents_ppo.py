"""Tests for PPO-hybrid (agents/ppo.py), its trainer and script (agents/ppo_train.py,
scripts/train_ppo.py) and the learning-curve reader (glimpse/experiments/curves.py)."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch

from agents.policies import POLICIES
from agents.ppo import (
    PPOConfig,
    collect_episodes,
    compute_gae,
    location_advantages,
    ppo_clip_loss,
    ppo_update,
    replay,
)
from agents.ppo_train import PPOTrainConfig, train_ppo
from agents.ram import RAM
from agents.reinforce import collect_rollout
from envs import GlimpseVectorEnv, MDPConfig
from glimpse.experiments.curves import (
    CurvesConfig,
    accuracy_table,
    plot_curves,
    read_curve,
    run_curves,
)
from glimpse.training import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ GAE
def test_compute_gae_hand_computed():
    rewards = torch.tensor([[0.0], [0.0], [1.0]])
    values = torch.tensor([[0.5], [0.6], [0.8]])
    dones = torch.tensor([[0.0], [0.0], [1.0]])
    adv, ret = compute_gae(rewards, values, dones, torch.tensor([9.0]), 0.9, 0.8)
    # t=2: 1 - 0.8 = 0.2 (done: no bootstrap from 9)
    # t=1: 0.9*0.8 - 0.6 = 0.12;  0.12 + 0.9*0.8*0.2 = 0.264
    # t=0: 0.9*0.6 - 0.5 = 0.04;  0.04 + 0.72*0.264 = 0.23008
    torch.testing.assert_close(adv, torch.tensor([[0.23008], [0.264], [0.2]]))
    torch.testing.assert_close(ret, torch.tensor([[0.73008], [0.864], [1.0]]))


def test_compute_gae_done_cuts_and_last_value_bootstraps():
    rewards = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    values = torch.tensor([[0.5, 0.0], [0.5, 1.0]])
    dones = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    adv, _ = compute_gae(rewards, values, dones, torch.tensor([3.0, 2.0]), 0.5, 1.0)
    # column 0: t=1: 2 + 0.5*3 - 0.5 = 3;  t=0: 1 - 0.5 = 0.5 (episode ended, no carry)
    # column 1: t=1: 0 + 0.5*2 - 1 = 0;  t=0: 0 + 0.5*1 - 0 = 0.5, + 0.5*0 = 0.5
    torch.testing.assert_close(adv, torch.tensor([[0.5, 0.5], [3.0, 0.0]]))


def test_compute_gae_rejects_bad_shapes():
    with pytest.raises(ValueError, match="share a"):
        compute_gae(torch.zeros(3, 2), torch.zeros(3, 1), torch.zeros(3, 2), torch.zeros(2), 1, 1)
    with pytest.raises(ValueError, match="last_value"):
        compute_gae(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3), 1, 1)


# ------------------------------------------------------------ clip loss
def test_ppo_clip_loss_hand_computed():
    ratio = torch.tensor([1.5, 0.5, 1.1, 0.7])
    new = ratio.log().requires_grad_()
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, stats = ppo_clip_loss(new, torch.zeros(4), adv, 0.2)
    # min(r A, clip(r) A): 1.2, 0.5, -1.1, -0.8 -> mean -0.05
    assert loss.item() == pytest.approx(0.05)
    assert stats["clip_fraction"] == pytest.approx(0.75)
    kl = ((ratio - 1) - ratio.log()).mean().item()
    assert stats["approx_kl"] == pytest.approx(kl)
    loss.backward()
    # Clipped terms have no gradient; d(-r A / 4)/d log r = -r A / 4 for the others.
    torch.testing.assert_close(new.grad, torch.tensor([0.0, -0.125, 0.275, 0.0]))


def test_ppo_clip_loss_equals_policy_gradient_at_ratio_one():
    logp = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    adv = torch.tensor([0.3, -1.0, 2.0])
    loss, stats = ppo_clip_loss(logp, logp.detach(), adv, 0.2)
    loss.backward()
    torch.testing.assert_close(logp.grad, -adv / 3)
    assert stats["clip_fraction"] == 0.0


def test_ppo_clip_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        ppo_clip_loss(torch.zeros(3), torch.zeros(2), torch.zeros(3), 0.2)
    with pytest.raises(ValueError, match="clip_range"):
        ppo_clip_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3), 1.5)
    with pytest.raises(ValueError, match="clip_range"):
        PPOConfig(clip_range=0.0)
    with pytest.raises(ValueError, match="minibatches"):
        PPOConfig(minibatches=0)


# ------------------------------------------------------- rollout/update
def tiny_env(
    n: int = 8, num_glimpses: int = 3, num_targets: int = 1, coded: bool = False
) -> GlimpseVectorEnv:
    """24 random 16x16 images; ``coded``: each image's brightness is its label / 9."""
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(24, 1, 16, 16, generator=gen)
    labels = torch.randint(0, 10, (24, num_targets), generator=gen).squeeze(1)
    if coded:
        images = 0.9 * labels.float().reshape(-1, 1, 1, 1) / 9 + 0.1 * images
    cfg = MDPConfig(glimpse_size=4, num_glimpses=num_glimpses, num_targets=num_targets)
    venv = GlimpseVectorEnv((images, labels), n, cfg)
    venv.reset(seed=0)
    return venv


def tiny_ram(core: str = "rnn") -> RAM:
    torch.manual_seed(0)
    return RAM((1, 1, 4, 4), hidden=16, core=core, what_dim=8, where_dim=8, glimpse_dim=16)


@pytest.mark.parametrize("core", ["rnn", "lstm"])
def test_replay_recomputes_the_rollout(core):
    """Replaying stored glimpses from the initial state gives the rollout's numbers, on the
    whole batch and on any subset of episodes (minibatches of whole episodes)."""
    policy, venv = tiny_ram(core), tiny_env()
    batch = collect_episodes(policy, venv)
    assert batch.obs["glimpse"].shape == (3, 8, 1, 1, 4, 4)
    assert batch.logits.shape == (1, 8, 10)
    with torch.no_grad():
        logp, _, values, logits = replay(policy, batch)
        torch.testing.assert_close(logp, batch.log_probs)
        torch.testing.assert_close(values, batch.values)
        torch.testing.assert_close(logits, batch.logits)
        idx = torch.tensor([5, 1, 6])
        sub = batch.select(idx)
        logp_sub, _, _, _ = replay(policy, sub)
    torch.testing.assert_close(logp_sub, batch.log_probs[:, idx])


def test_location_advantages_with_gamma_lambda_one_is_reinforce():
    """gamma = lambda = 1: A_t = G_{t+1} - V_t for t < S - 1, REINFORCE's advantage."""
    policy, venv = tiny_ram(), tiny_env(num_glimpses=2, num_targets=2)
    torch.manual_seed(1)
    venv.source.labels  # noqa: B018 -- two labels per image
    batch = collect_episodes(policy, venv)
    batch.rewards = torch.rand_like(batch.rewards)  # any rewards, not only terminal ones
    adv, ret = location_advantages(batch, 1.0, 1.0)
    to_go = batch.rewards.flip(0).cumsum(0).flip(0)
    future = to_go[1:]
    torch.testing.assert_close(adv, future - batch.values[:-1])
    torch.testing.assert_close(ret, future)


def test_ppo_update_learns_labels_on_tiny_data():
    """Classification by backprop inside PPO's minibatches: on 24 images whose brightness
    codes the label, the loss falls and the accuracy rises well above chance."""
    policy, venv = tiny_ram(), tiny_env(n=24, coded=True)
    opt = torch.optim.Adam(policy.parameters(), lr=3e-2)
    cfg = PPOConfig(update_epochs=4, minibatches=3)
    first = None
    for _ in range(10):
        batch = collect_episodes(policy, venv)
        m = ppo_update(policy, opt, batch, cfg)
        first = m["losses/classification"] if first is None else first
    assert m["charts/optimizer_steps"] == 12
    assert m["losses/classification"] < 0.5 * first
    with torch.no_grad():
        acc = collect_rollout(policy, venv, deterministic=True).predictions == venv.core.labels
    assert acc.float().mean() > 0.4  # chance: 0.1
    with pytest.raises(ValueError, match="minibatches"):
        ppo_update(policy, opt, batch, PPOConfig(minibatches=25))


# ---------------------------------------------------------------- trainer
def small_cfg(tmp_path, **kw) -> PPOTrainConfig:
    base = {
        "task": "mnist",
        "train_limit": 512,
        "batch_size": 32,
        "epochs": 1,
        "val_size": 500,
        "eval_batch_size": 500,
        "hidden": 32,
        "playback": 2,
        "threads": 1,
        "runs_root": str(tmp_path),
        "run_name": "ppo",
        "log_every": 1,
    }
    base.update(kw)
    return PPOTrainConfig(**base)


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="minibatches"):
        small_cfg(tmp_path, minibatches=64).resolved()
    with pytest.raises(ValueError, match="agent dram"):
        small_cfg(tmp_path, algo="sb3-recurrent-ppo", agent="dram").resolved()
    with pytest.raises(ValueError, match="algo"):
        small_cfg(tmp_path, algo="a2c").resolved()
    # PPO's own hyperparameters are declared once (agents.ppo.PPOHyperparameters) with
    # their bounds, so the CLI check names the flag
    with pytest.raises(ValueError, match=r"--clip-range must be in \(0, 1\), got 2\.0"):
        small_cfg(tmp_path, clip_range=2.0).resolved()
    cfg = small_cfg(tmp_path, run_name=None).resolved()
    assert cfg.run_name.startswith("ppo-hybrid-mnist-s0-") and cfg.num_glimpses == 6
    assert cfg.budget(512) == (512 * 6, 512 * 6)
    assert small_cfg(tmp_path, total_env_steps=1000).resolved().budget(512) == (1000, 1000)


def test_train_ppo_hybrid_runs_and_logs(tmp_path, data_root):
    """A few thousand env steps (512 episodes x 6 glimpses) on Glimpse/MNIST-v0."""
    cfg = small_cfg(tmp_path, data_root=str(data_root), eval_every_steps=1536)
    result = train_ppo(cfg)
    run = tmp_path / "ppo"
    assert {"config.json", "last.pt", "best.pt", "metrics.json"} <= {p.name for p in run.iterdir()}
    assert result["env_steps"] == 512 * 6 and result["images_seen"] == 512
    assert json.loads((run / "metrics.json").read_text())["test_accuracy"] == pytest.approx(
        result["test_accuracy"]
    )
    assert json.loads((run / "config.json").read_text())["algo"] == "ppo-hybrid"
    curve = read_curve(run)
    assert curve.env_steps.tolist() == [1536, 3072]  # two evaluations, on env steps
    assert np.all(np.diff(curve.seconds) > 0)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"losses/classification", "losses/policy", "losses/value", "train/accuracy"} <= scalars
    assert {"charts/clip_fraction", "eval/accuracy", "eval/test_accuracy"} <= scalars
    assert any(t.startswith("eval/trajectories") for t in acc.Tags()["images"])


def test_save_load_and_resume_reproduce(tmp_path, data_root):
    """Reloading best.pt gives the same outputs; 1 epoch + resume to 2 epochs ends with
    exactly the weights of an uninterrupted 2-epoch run (so the same next losses)."""
    kw = {"data_root": str(data_root), "train_limit": 128, "lr_schedule": "constant", "playback": 0}
    train_ppo(small_cfg(tmp_path, run_name="full", epochs=2, **kw))
    train_ppo(small_cfg(tmp_path, run_name="split", epochs=1, **kw))
    train_ppo(small_cfg(tmp_path, run_name="split", epochs=2, resume=True, **kw))
    full = load_checkpoint(tmp_path / "full" / "last.pt")
    split = load_checkpoint(tmp_path / "split" / "last.pt")
    assert full["global_step"] == split["global_step"] == 2 * 128 * 6
    for k, v in full["model"].items():
        torch.testing.assert_close(split["model"][k], v, rtol=0, atol=0)
    # Same outputs after reload.
    cfg = small_cfg(tmp_path, **kw).resolved()
    a, b = (POLICIES["ram"](cfg, (1, 1, 8, 8), 1) for _ in range(2))
    a.load_state_dict(full["model"])
    b.load_state_dict(load_checkpoint(tmp_path / "full" / "last.pt")["model"])
    obs = {"glimpse": torch.rand(4, 1, 1, 8, 8), "location": torch.rand(4, 2) * 2 - 1}
    out_a = a.act(obs, a.initial_state(obs), deterministic=True)
    out_b = b.act(obs, b.initial_state(obs), deterministic=True)
    torch.testing.assert_close(out_a.logits, out_b.logits)
    torch.testing.assert_close(out_a.location, out_b.location)


# ----------------------------------------------------------------- script
def load_script(name: str):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def test_script_help(capsys):
    for name, flags in (
        ("train_ppo", ("--algo", "sb3-recurrent-ppo", "--gae-lambda", "--total-env-steps")),
        ("plot_curves", ("--runs", "--budgets")),
    ):
        with pytest.raises(SystemExit) as exit_info:
            load_script(name).main(["--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert all(f in out for f in flags), out


def test_script_end_to_end(tmp_path, data_root):
    script = load_script("train_ppo")
    args = [
        "--data-root", str(data_root), "--train-limit", "256", "--batch-size", "32",
        "--epochs", "1", "--val-size", "500", "--eval-batch-size", "500", "--hidden", "16",
        "--threads", "1", "--runs-root", str(tmp_path), "--run-name", "cli", "--playback", "0",
        "--update-epochs", "2", "--minibatches", "2",
    ]  # fmt: skip
    result = script.main(args)
    assert result["env_steps"] == 256 * 6
    assert (tmp_path / "cli" / "metrics.json").exists()


# ----------------------------------------------------------------- curves
def fake_run(root, name, config, points):
    """A run folder as the trainers write it: config.json, hparams text, eval scalars."""
    from torch.utils.tensorboard import SummaryWriter

    run = root / name
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config))
    writer = SummaryWriter(str(run))
    writer.add_text("hparams", "x", 0)
    for step, acc, secs in points:
        writer.add_scalar("eval/accuracy", acc, step)
        if secs is not None:
            writer.add_scalar("charts/elapsed_s", secs, step)
    writer.close()
    return run


def test_curves_convert_reinforce_episodes_to_env_steps(tmp_path):
    rf = fake_run(
        tmp_path, "rf", {"task": "mnist", "num_glimpses": 6}, [(100, 0.5, None), (200, 0.7, None)]
    )
    multi = fake_run(
        tmp_path, "multi", {"task": "multimnist", "num_glimpses": 8}, [(10, 0.1, None)]
    )
    ppo = fake_run(
        tmp_path,
        "ppo",
        {"task": "mnist", "num_glimpses": 6, "algo": "ppo-hybrid"},
        [(600, 0.6, 3.0), (1200, 0.8, 7.5)],
    )
    c_rf, c_multi, c_ppo = read_curve(rf), read_curve(multi), read_curve(ppo, name="PPO")
    assert c_rf.algo == "reinforce" and c_rf.env_steps.tolist() == [600, 1200]
    assert c_multi.env_steps.tolist() == [160]
    assert np.all(c_rf.seconds >= 0)
    assert c_ppo.env_steps.tolist() == [600, 1200] and c_ppo.seconds.tolist() == [3.0, 7.5]
    table = accuracy_table([c_rf, c_ppo], [600, 1000, 1500])
    lines = table.strip().splitlines()
    assert lines[0].startswith("| run | algorithm | ≤ 600 steps")
    assert "| PPO | ppo-hybrid | 60.00% (3 s) | 60.00% (3 s) |  |" in lines
    paths = plot_curves([c_rf, c_ppo], tmp_path / "img", "cmp")
    assert [p.name for p in paths] == ["cmp_vs_steps.png", "cmp_vs_time.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    out = run_curves(CurvesConfig(runs=(str(rf),), out_dir=str(tmp_path / "i2"), budgets=(600,)))
    assert "50.00%" in out
    with pytest.raises(ValueError, match="labels"):
        run_curves(CurvesConfig(runs=(str(rf),), labels=("a", "b")))
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        read_curve(tmp_path / "img")
    assert math.isfinite(c_rf.seconds[-1])
