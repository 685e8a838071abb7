"""Tests for the stable-baselines3 side of the glimpse agents (agents/sb3.py): the glimpse
features extractor, RecurrentPPO on the SB3 vector env, evaluation, the TensorBoard
callback and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO

from agents.ppo_train import PPOTrainConfig, train_ppo
from agents.sb3 import (
    GlimpseExtractor,
    build_recurrent_ppo,
    evaluate_sb3,
    load_sb3_state,
    sb3_predict,
    sb3_state,
)
from envs import GlimpseVectorEnv, MDPConfig
from envs.sb3 import SB3VecEnv
from glimpse.training import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def coded_source(n: int = 64, seed: int = 0):
    """16x16 images whose brightness codes the label (label / 9): one glimpse suffices."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=gen)
    images = 0.9 * labels.float().reshape(-1, 1, 1, 1) / 9 + 0.1 * torch.rand(
        n, 1, 16, 16, generator=gen
    )
    return images, labels


def test_extractor_shapes_and_errors():
    space = spaces.Dict(
        {
            "glimpse": spaces.Box(0, 1, (2, 1, 4, 4), np.float32),
            "location": spaces.Box(-1, 1, (2,), np.float32),
            "step": spaces.Box(0, 1, (1,), np.float32),
        }
    )
    ext = GlimpseExtractor(space, what_dim=8, where_dim=8, glimpse_dim=16)
    assert ext.features_dim == 17
    obs = {
        "glimpse": torch.rand(5, 2, 1, 4, 4),
        "location": torch.rand(5, 2),
        "step": torch.rand(5, 1),
    }
    out = ext(obs)
    assert out.shape == (5, 17)
    # The glimpse part is RAM's glimpse network; the step is passed through.
    torch.testing.assert_close(out[:, :16], ext.glimpse_net(obs["glimpse"], obs["location"]))
    torch.testing.assert_close(out[:, 16:], obs["step"])
    with_context = spaces.Dict(dict(space.spaces, context=spaces.Box(0, 1, (1, 5, 5), np.float32)))
    ext = GlimpseExtractor(with_context, glimpse_dim=16, context_dim=4)
    assert ext(dict(obs, context=torch.rand(5, 1, 5, 5))).shape == (5, 21)
    with pytest.raises(ValueError, match="glimpse"):
        GlimpseExtractor(spaces.Dict({"x": spaces.Box(0, 1, (3,), np.float32)}))


def test_extractor_with_plain_ppo_multiinputpolicy():
    """Usable as MultiInputPolicy's extractor on the SB3 face of the batched env."""
    venv = GlimpseVectorEnv(coded_source(), 8, MDPConfig(glimpse_size=4, num_glimpses=2))
    model = PPO(
        "MultiInputPolicy",
        SB3VecEnv(venv),
        n_steps=4,
        batch_size=16,
        n_epochs=1,
        policy_kwargs={"features_extractor_class": GlimpseExtractor},
        seed=0,
        device="cpu",
    )
    model.learn(64)
    assert isinstance(model.policy.features_extractor, GlimpseExtractor)
    assert model.num_timesteps >= 64


def tiny_cfg(tmp_path, **kw) -> PPOTrainConfig:
    base = {
        "algo": "sb3-recurrent-ppo",
        "batch_size": 32,
        "hidden": 32,
        "num_glimpses": 2,
        "glimpse_size": 4,
        "lr": 3e-3,
        "lr_schedule": "constant",
        "sb3_ent_coef": 0.0,
        "eval_batch_size": 64,
        "runs_root": str(tmp_path),
        "run_name": "sb3",
    }
    base.update(kw)
    return PPOTrainConfig(**base).resolved()


def test_recurrent_ppo_learns_coded_labels_fast(tmp_path):
    """Fast learning check: the label is only learned from the env's reward (the flat
    action's label part); on brightness-coded images RecurrentPPO gets far above chance
    (10%) within 8k env steps (45% when measured; the run is deterministic)."""
    torch.manual_seed(0)
    cfg = tiny_cfg(tmp_path, update_epochs=4, minibatches=2, sb3_n_steps=8)
    venv = GlimpseVectorEnv(coded_source(256), 32, cfg.mdp(), shuffle=True)
    venv.reset(seed=0)
    model = build_recurrent_ppo(cfg, venv)
    model.learn(8000)
    test = GlimpseVectorEnv(coded_source(64, seed=1), 64, cfg.mdp(), shuffle=False)
    acc = evaluate_sb3(model, test, cfg)["accuracy"]
    assert acc > 0.3, acc
    preds, fixations = sb3_predict(model, test, torch.arange(5), cfg.sb3_grid)
    assert preds.shape == (5, 1) and fixations.shape == (5, 2, 2)
    assert fixations.abs().max() <= 1


def test_sb3_state_round_trip(tmp_path):
    cfg = tiny_cfg(tmp_path)
    venv = GlimpseVectorEnv(coded_source(), 32, cfg.mdp())
    venv.reset(seed=0)
    a = build_recurrent_ppo(cfg, venv)
    a.learn(128)
    state = sb3_state(a, best=0.5)
    path = tmp_path / "s.pt"
    torch.save(state, path)
    b = build_recurrent_ppo(replace_seed(cfg, 1), venv)
    load_sb3_state(b, torch.load(path, weights_only=True))
    assert b.num_timesteps == a.num_timesteps
    test = GlimpseVectorEnv(coded_source(16, seed=2), 16, cfg.mdp(), shuffle=False)
    pa, fa = sb3_predict(a, test, torch.arange(16), cfg.sb3_grid)
    pb, fb = sb3_predict(b, test, torch.arange(16), cfg.sb3_grid)
    assert torch.equal(pa, pb) and torch.equal(fa, fb)


def replace_seed(cfg: PPOTrainConfig, seed: int) -> PPOTrainConfig:
    from dataclasses import replace

    return replace(cfg, seed=seed)


def test_train_sb3_on_mnist_runs_logs_and_resumes(tmp_path, data_root):
    """A few thousand env steps on Glimpse/MNIST-v0 through train_ppo, then a resume."""
    kw = {
        "data_root": str(data_root),
        "task": "mnist",
        "train_limit": 512,
        "val_size": 500,
        "eval_batch_size": 500,
        "num_glimpses": None,
        "glimpse_size": None,
        "total_env_steps": 3072,
        "eval_every_steps": 1536,
        "playback": 2,
        "threads": 1,
        "update_epochs": 2,
        "minibatches": 2,
    }
    result = train_ppo(tiny_cfg(tmp_path, **kw))
    run = tmp_path / "sb3"
    assert {"config.json", "last.pt", "best.pt", "metrics.json"} <= {p.name for p in run.iterdir()}
    assert result["env_steps"] >= 3072 and result["method"] == "sb3-recurrent-ppo"
    right = result["test_accuracy"] * 10000  # a count over the 10k MNIST test images
    assert abs(right - round(right)) < 1e-3 and result["test_error"] == 1 - result["test_accuracy"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"eval/accuracy", "charts/elapsed_s", "train/accuracy", "losses/policy"} <= scalars
    assert [e.step for e in acc.Scalars("eval/accuracy")][:2] == [1536, 3072]
    assert any(t.startswith("eval/trajectories") for t in acc.Tags()["images"])
    # Resume with a larger budget continues from last.pt's step count.
    last = load_checkpoint(run / "last.pt")
    more = train_ppo(tiny_cfg(tmp_path, resume=True, **dict(kw, total_env_steps=4608)))
    assert more["env_steps"] >= 4608 and last["num_timesteps"] == result["env_steps"]


def test_recurrent_ppo_beats_chance_on_mnist(tmp_path, data_root):
    """RecurrentPPO learns MNIST labels from the reward alone: > 20% (chance 10%) on 1000
    validation images after 60k env steps (5k training images, seed 0). Measured on
    2026-12-01 with stable-baselines3/sb3-contrib 2.9.2, gymnasium 1.4.0, torch 2.14.1:
    19.8% at 30k steps (the earlier budget, which measured 28.2% with the packages of an
    earlier session and no longer clears the bar; 2.9.0 and gymnasium 1.3.0 gave 19.8%
    too), 29.5% at 60k. About 40 s on one quiet thread. The final test report is cut to
    the first 1000 test images (``eval_limit``; val is 1000 images either way): the
    assertion reads validation only; training and validation are unchanged (measured
    2026-12-02 at load 4-5 on the 2 cores: 116.7 s with the full test set, 105.7 s)."""
    cfg = PPOTrainConfig(
        algo="sb3-recurrent-ppo",
        data_root=str(data_root),
        train_limit=5000,
        batch_size=128,
        update_epochs=4,
        minibatches=4,
        lr=3e-3,
        lr_schedule="constant",
        sb3_ent_coef=0.0,
        total_env_steps=60000,
        val_size=1000,
        eval_limit=1000,
        eval_batch_size=1000,
        playback=0,
        threads=1,
        runs_root=str(tmp_path),
        run_name="mnist",
    )
    result = train_ppo(cfg)
    assert result["val_best_accuracy"] > 0.2, result
