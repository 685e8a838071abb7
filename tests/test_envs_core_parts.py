"""Parts mode of the glimpse MDP (FCAN, Liu et al. 2016): K part locations per step."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs  # noqa: F401  (registers Glimpse/*)
from envs import (
    ActionCodec,
    ActionError,
    FlattenActionWrapper,
    GlimpseEnv,
    GlimpseMDP,
    GlimpseVectorEnv,
    MDPConfig,
)
from glimpse.retina import Retina, coarse_view

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK = "Glimpse/TwoDigitParts-v0"

# As in tests/test_envs_sb3.py: SB3's checker recommends flattening observations that are
# neither images nor vectors, and mistakes float32 3-D boxes for images. MultiInputPolicy
# flattens all of them (float32 spaces are never fed to its CNN; see the PPO test below).
# Parts mode adds the (K, 2) location and the (T, K, 2) history to the glimpse and context.
SB3_ALLOWED = (
    "Your observation glimpse has an unconventional shape",
    "Your observation location has an unconventional shape",
    "It seems that your observation space context is an image but the upper and lower bounds",
    "It seems that your observation context is an image but its `dtype` is (float32)",
    "It seems that your observation space history is an image but the upper and lower bounds",
    "It seems that your observation history is an image but its `dtype` is (float32)",
    "The minimal resolution for an image is 36x36",
)


def tiny(n: int = 6, h: int = 20, w: int = 24, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, h, w), generator=gen, dtype=torch.uint8)
    return images, torch.randint(0, 10, (n,), generator=gen)


def parts_cfg(**kw) -> MDPConfig:
    base = {"glimpse_size": 6, "num_glimpses": 3, "num_parts": 2, "context_size": 8}
    return MDPConfig(**{**base, **kw})


def caught_warnings(fn, env) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(env)
    return [str(w.message) for w in caught]


def test_registered_parts_task_passes_gymnasium_check_env(data_root):
    env = gym.make(TASK, split="test", dataset_kwargs={"limit": 16})
    assert caught_warnings(check_env, env.unwrapped) == []
    space = env.observation_space
    assert space["glimpse"].shape == (2, 2, 1, 28, 28)
    assert space["location"].shape == (2, 2)
    assert space["history"].shape == (2, 2, 2)
    assert space["context"].shape == (1, 25, 25)
    assert env.unwrapped.config.num_classes == 100


@pytest.mark.parametrize("mode", ["multidiscrete", "box"])
def test_wrapped_parts_task_passes_sb3_check_env(mode, data_root):
    env = FlattenActionWrapper(gym.make(TASK, split="test", dataset_kwargs={"limit": 16}), mode)
    got = caught_warnings(sb3_check_env, env)
    assert [m for m in got if not m.startswith(SB3_ALLOWED)] == []
    want = (2 * 2 + 100,) if mode == "box" else (4 + 1,)
    assert env.action_space.shape == want


def test_parts_variant_without_a_dataset_passes_both_checkers():
    kw = parts_cfg(num_parts=3, num_glimpses=3, num_scales=2).__dict__
    made = gym.make(TASK, source=tiny(), render_mode="rgb_array", **kw)
    assert caught_warnings(check_env, made.unwrapped) == []
    env = GlimpseEnv(tiny(), **kw)
    got = caught_warnings(sb3_check_env, FlattenActionWrapper(env, "box"))
    assert [m for m in got if not m.startswith(SB3_ALLOWED)] == []


def test_ppo_runs_on_the_parts_env():
    from stable_baselines3 import PPO

    env = FlattenActionWrapper(GlimpseEnv(tiny(), **parts_cfg().__dict__), "multidiscrete")
    model = PPO("MultiInputPolicy", env, n_steps=16, batch_size=8, n_epochs=1, seed=0)
    model.learn(32)
    action, _ = model.predict(env.reset(seed=0)[0])
    assert action.shape == (5,)


def test_core_parts_glimpses_are_retina_crops_at_each_part():
    images, labels = tiny(3)
    x = images.float() / 255
    cfg = parts_cfg()
    mdp = GlimpseMDP(cfg, 3)
    obs = mdp.reset(x, labels)
    assert obs["glimpse"].shape == (3, 2, 1, 1, 6, 6)
    assert torch.equal(obs["location"], torch.zeros(3, 2, 2))  # centre, for both parts
    torch.testing.assert_close(obs["context"], coarse_view(x, 8))
    loc = torch.tensor([[[-0.5, 0.2], [0.7, -0.1]]] * 3)
    res = mdp.step(loc)
    retina = Retina(6)
    for k in range(2):
        torch.testing.assert_close(res.obs["glimpse"][:, k], retina(x, loc[:, k]).clamp(0, 1))
    hist = res.obs["history"]
    assert hist.shape == (3, 3, 2, 2)
    assert torch.equal(hist[:, 1], loc) and torch.equal(hist[:, 2], torch.zeros(3, 2, 2))
    assert not res.classified.any() and torch.equal(res.reward, torch.zeros(3))
    assert mdp.trajectory(0).shape == (2, 2, 2)


def test_core_parts_episode_classifies_after_T_steps_and_pays_the_label():
    images, labels = tiny(2)
    mdp = GlimpseMDP(parts_cfg(num_glimpses=2), 2)
    mdp.reset(images.float() / 255, labels)
    mdp.step(torch.zeros(2, 2, 2))
    res = mdp.step(torch.zeros(2, 2, 2), torch.stack([labels[0], (labels[1] + 1) % 10]))
    assert res.classified.all() and res.terminated.all()
    assert res.reward.tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    "loc, match",
    [
        (torch.zeros(2, 2), r"shape \(2, 2, 2\)"),
        (torch.full((2, 2, 2), 1.5), r"\[-1, 1\]"),
        (torch.tensor([[[0.0, float("nan")], [0, 0]]] * 2), "finite"),
    ],
)
def test_core_parts_rejects_bad_locations_and_keeps_its_state(loc, match):
    images, labels = tiny(2)
    mdp = GlimpseMDP(parts_cfg(), 2)
    mdp.reset(images.float() / 255, labels)
    before = mdp.history.clone()
    with pytest.raises(ActionError, match=match):
        mdp.step(loc)
    assert torch.equal(mdp.history, before)


def test_parts_mode_needs_the_context_view_and_a_valid_K():
    with pytest.raises(ValueError, match="context_size"):
        MDPConfig(num_parts=2)
    with pytest.raises(ValueError, match="num_parts"):
        MDPConfig(num_parts=-1, context_size=4)


def test_reset_accepts_one_initial_location_per_part():
    images, labels = tiny(2)
    mdp = GlimpseMDP(parts_cfg(), 2)
    init = torch.tensor([[[0.1, 0.2], [-0.3, 0.4]]] * 2)
    obs = mdp.reset(images.float() / 255, labels, init_loc=init)
    assert torch.equal(obs["location"], init)


@pytest.mark.parametrize("mode", ["multidiscrete", "box"])
def test_codec_decodes_K_locations_and_encode_inverts_it(mode):
    cfg = parts_cfg(num_parts=3)
    codec = ActionCodec(cfg, mode, grid_size=4)
    loc = torch.tensor([[[-0.75, 0.25], [0.75, -0.25], [0.25, 0.75]]])
    label = torch.tensor([7])
    flat = codec.encode(loc, label)
    assert flat.shape == codec.space.shape[:1] or flat.shape[1] == codec.space.shape[0]
    got_loc, got_label, _ = codec.decode(flat)
    assert got_loc.shape == (1, 3, 2)
    torch.testing.assert_close(got_loc, loc)  # cell centres of the 4x4 grid: exact
    assert got_label.tolist() == [7]
    if mode == "multidiscrete":
        assert flat.tolist() == [[0, 2, 3, 1, 2, 3, 7]]


def test_single_and_vector_parts_envs_agree():
    source = tiny(4)
    cfg = parts_cfg()
    single = GlimpseEnv(source, **cfg.__dict__)
    vec = GlimpseVectorEnv(source, 1, cfg, shuffle=False, array_type="numpy")
    obs_s, _ = single.reset(seed=0, options={"index": 0})
    obs_v, _ = vec.reset(seed=0, options={"indices": [0]})
    loc = np.array([[0.3, -0.4], [-0.6, 0.1]], dtype=np.float32)
    obs_s, *_ = single.step({"location": loc, "label": 0})
    obs_v, *_ = vec.step({"location": loc[None], "label": np.array([0])})
    for key in obs_s:
        np.testing.assert_allclose(obs_s[key], obs_v[key][0], atol=1e-6)


def test_parts_env_renders_every_part():
    env = GlimpseEnv(tiny(), render_mode="rgb_array", **parts_cfg().__dict__)
    env.reset(seed=0)
    env.step({"location": np.array([[0.5, 0.5], [-0.5, -0.5]], np.float32), "label": 0})
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
