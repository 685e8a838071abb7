"""Tests for the stable-baselines3 faces: FlattenActionWrapper, ActionCodec and SB3VecEnv.

SB3 has no ``Dict`` action spaces, so SB3 sees the single env through
:class:`envs.FlattenActionWrapper` and the batched env through :class:`envs.sb3.SB3VecEnv`,
both decoding flat actions with the same :class:`envs.ActionCodec`.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import envs
from envs import ActionCodec, FlattenActionWrapper, GlimpseEnv, GlimpseVectorEnv, MDPConfig
from envs.sb3 import SB3VecEnv

LIMIT = 32

# SB3's checker recommends flattening any observation that is neither an image (3-D) nor a
# vector. The glimpse is (k, C, g, g) by design (the issue's observation spec); SB3's
# MultiInputPolicy flattens it in its CombinedExtractor (the PPO tests below train on it)
# and the project's own features extractor consumes it as is. Nothing else is allowed.
#
# MultiMNIST's (1, 25, 25) ``context`` view looks like an image to SB3's checker, which
# then warns about CnnPolicy's uint8 dtype, [0, 255] range and 36x36 minimum. Neither
# applies: the space is float32 in [0, 1], which SB3's ``is_image_space`` rejects, so
# MultiInputPolicy flattens it instead of feeding a CNN (DRAM's context network reads it).
SB3_ALLOWED = (
    "Your observation glimpse has an unconventional shape",
    "It seems that your observation space context is an image but the upper and lower bounds",
    "The minimal resolution for an image is 36x36",
    "It seems that your observation context is an image but its `dtype` is (float32)",
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_kwargs(env_id: str) -> dict:
    kwargs: dict = {"split": "test"}
    if env_id != "Glimpse/MNIST-v0":
        kwargs["dataset_kwargs"] = {"limit": LIMIT}
    return kwargs


def tiny_source(n: int = 7, h: int = 20, w: int = 24, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, h, w), generator=gen, dtype=torch.uint8)
    return images, torch.randint(0, 10, (n,), generator=gen)


def sb3_warnings(env: gym.Env) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(env)
    return [str(w.message) for w in caught]


# ------------------------------------------------------------------ SB3's checker


@pytest.mark.parametrize("mode", ["multidiscrete", "box"])
@pytest.mark.parametrize("env_id", list(envs.TASKS))
def test_wrapped_registered_ids_pass_sb3_check_env(env_id, mode, data_root):
    env = FlattenActionWrapper(gym.make(env_id, **small_kwargs(env_id)), mode)
    caught = sb3_warnings(env)
    unexpected = [m for m in caught if not m.startswith(SB3_ALLOWED)]
    assert unexpected == []


@pytest.mark.parametrize("mode", ["multidiscrete", "box"])
def test_wrapped_variants_pass_sb3_check_env(mode):
    kw = {"early_stop": True, "relative": True, "init_location": "random", "step_reward": -0.01}
    env = FlattenActionWrapper(gym.make("Glimpse/MNIST-v0", source=tiny_source(), **kw), mode)
    assert [m for m in sb3_warnings(env) if not m.startswith(SB3_ALLOWED)] == []


def test_raw_env_dict_action_space_is_flagged_by_sb3_check_env():
    """Why the wrapper exists: SB3 does not support the native Dict action space."""
    caught = sb3_warnings(GlimpseEnv(tiny_source()))
    assert any("action space is not based off a numpy array" in m for m in caught)


# ------------------------------------------------------------------ the codec


def test_multidiscrete_codec_decodes_grid_cell_centres():
    cfg = MDPConfig(num_classes=10)
    codec = ActionCodec(cfg, "multidiscrete", grid_size=4)
    assert codec.space == gym.spaces.MultiDiscrete([4, 4, 10])
    loc, label, stop = codec.decode(np.array([[0, 3, 7], [1, 2, 0]]))
    torch.testing.assert_close(loc, torch.tensor([[-0.75, 0.75], [-0.25, 0.25]]))
    assert label.tolist() == [7, 0] and not stop.any()
    rel = ActionCodec(MDPConfig(relative=True, max_step=0.5, early_stop=True), grid_size=4)
    assert rel.space == gym.spaces.MultiDiscrete([4, 4, 10, 2])
    loc, label, stop = rel.decode(np.array([[0, 3, 2, 1]]))
    torch.testing.assert_close(loc, torch.tensor([[-0.375, 0.375]]))
    assert stop.tolist() == [True]


def test_box_codec_scales_location_and_takes_argmax_label():
    codec = ActionCodec(MDPConfig(relative=True, max_step=0.25, early_stop=True), "box")
    assert codec.space.shape == (13,) and codec.space.dtype == np.float32
    a = np.full((2, 13), -1.0, np.float32)
    a[:, :2] = [[1.0, -0.5], [3.0, 0.0]]  # out-of-box values are clipped, as SB3 would
    a[0, 2 + 6], a[1, 2 + 1] = 0.9, 0.5
    a[:, -1] = [0.3, -0.3]
    loc, label, stop = codec.decode(a)
    torch.testing.assert_close(loc, torch.tensor([[0.25, -0.125], [0.25, 0.0]]))
    assert label.tolist() == [6, 1] and stop.tolist() == [True, False]


@pytest.mark.parametrize("mode", ["multidiscrete", "box"])
def test_codec_encode_inverts_decode(mode):
    codec = ActionCodec(MDPConfig(early_stop=True), mode, grid_size=5)
    space = codec.space
    space.seed(0)
    flat = np.stack([space.sample() for _ in range(20)])
    loc, label, stop = codec.decode(flat)
    loc2, label2, stop2 = codec.decode(codec.encode(loc, label, stop))
    torch.testing.assert_close(loc2, loc)
    assert torch.equal(label2, label) and torch.equal(stop2, stop)


@pytest.mark.parametrize(
    ("mode", "flat", "match"),
    [
        ("multidiscrete", np.zeros((2, 4), np.int64), r"shape \(B, 3\), got \(2, 4\)"),
        ("multidiscrete", np.array([[9, 0, 0]]), r"out of range \[9, 9, 10\]"),
        ("multidiscrete", np.array([[0, 0, -1]]), "out of range"),
        # Truncated to label 3 and read as -2**63 before.
        ("multidiscrete", np.array([[0, 0, 3.5]]), r"whole numbers, got 3.5 at \[0, 2\]$"),
        ("multidiscrete", np.array([[0, 0, 1], [0, np.nan, 1]]), r"got nan at \[1, 1\]$"),
        ("multidiscrete", np.array([[np.inf, 0, 1]]), r"got inf at \[0, 0\]$"),
        ("box", np.zeros(12, np.float32), r"shape \(B, 12\), got \(12,\)"),
        ("box", np.full((1, 12), np.nan, np.float32), "must be finite"),
    ],
)
def test_codec_rejects_bad_flat_actions(mode, flat, match):
    with pytest.raises(ValueError, match=match):
        ActionCodec(MDPConfig(), mode).decode(flat)


def test_codec_rejects_bad_parameters():
    with pytest.raises(ValueError, match="mode"):
        ActionCodec(MDPConfig(), "discrete")
    with pytest.raises(ValueError, match="grid_size"):
        ActionCodec(MDPConfig(), grid_size=1)


def test_flatten_wrapper_steps_the_env_at_the_decoded_location():
    source = tiny_source()
    wrapped = FlattenActionWrapper(GlimpseEnv(source), "multidiscrete", grid_size=5)
    raw = GlimpseEnv(source)
    wrapped.reset(seed=0)
    raw.reset(seed=0)
    got = wrapped.step(np.array([4, 1, 3]))
    want = raw.step({"location": np.array([0.8, -0.4], np.float32), "label": 3})
    np.testing.assert_allclose(got[0]["location"], want[0]["location"], atol=1e-6)
    # The decoded 0.8 and the literal 0.8 differ in the last float32 bit; the glimpse moves
    # by (image gradient) x (that difference), ~1e-6.
    np.testing.assert_allclose(got[0]["glimpse"], want[0]["glimpse"], atol=1e-5)


def test_flatten_wrapper_rejects_non_integral_actions_without_changing_state():
    wrapped = FlattenActionWrapper(GlimpseEnv(tiny_source(), num_glimpses=1))
    wrapped.reset(seed=0)
    core = wrapped.unwrapped.core
    before = core.loc.clone(), core.num_fixations.clone(), core.done.clone()
    for bad, shown in [(3.5, "3.5"), (np.nan, "nan"), (-np.inf, "-inf")]:
        with pytest.raises(ValueError, match=rf"^multidiscrete actions .*, got {shown} at"):
            wrapped.step(np.array([0, 0, bad]))
        assert torch.equal(core.loc, before[0]) and torch.equal(core.num_fixations, before[1])
        assert torch.equal(core.done, before[2])
    _, _, terminated, _, info = wrapped.step(np.array([0, 0, 3.0]))  # whole floats are fine
    assert terminated and info["prediction"] == 3


# ------------------------------------------------------------------ SB3VecEnv


def test_sb3_vec_env_resets_ended_episodes_in_the_same_step():
    images, labels = tiny_source(8)
    venv = GlimpseVectorEnv((images, labels), 3, MDPConfig(num_glimpses=2), shuffle=False)
    sb3 = SB3VecEnv(venv, "multidiscrete", grid_size=3)
    assert sb3.num_envs == 3 and sb3.action_space == gym.spaces.MultiDiscrete([3, 3, 10])
    obs = sb3.reset()
    assert obs["glimpse"].shape == (3, 1, 1, 8, 8) and isinstance(obs["glimpse"], np.ndarray)
    np.testing.assert_allclose(obs["step"], 0.5)
    acts = np.stack([np.array([2, 2, int(lab)]) for lab in labels[:3]])
    acts[1, 2] = (acts[1, 2] + 1) % 10
    obs, rewards, dones, infos = sb3.step(acts)
    assert not dones.any() and rewards.tolist() == [0.0, 0.0, 0.0]
    assert infos == [{}, {}, {}]
    last = obs
    obs, rewards, dones, infos = sb3.step(acts)
    assert dones.all() and rewards.dtype == np.float32 and rewards.tolist() == [1.0, 0.0, 1.0]
    for i, info in enumerate(infos):
        term = info["terminal_observation"]
        for k in term:  # the final observation of the old episode: the final step moved nowhere
            np.testing.assert_array_equal(term[k], last[k][i])
        assert info["episode"] == {"r": [1.0, 0.0, 1.0][i], "l": 2, "correct": [1.0, 0.0, 1.0][i]}
        assert info["TimeLimit.truncated"] is False
    # The returned observation already belongs to the next episode (images 3, 4, 5).
    np.testing.assert_allclose(obs["step"], 0.5)
    np.testing.assert_array_equal(obs["location"], np.zeros((3, 2), np.float32))
    assert venv.indices.tolist() == [3, 4, 5]
    fresh = GlimpseEnv((images, labels), num_glimpses=2)
    np.testing.assert_array_equal(
        obs["glimpse"][2], fresh.reset(options={"index": 5})[0]["glimpse"]
    )


def test_sb3_vec_env_seed_makes_resets_reproducible():
    def first_obs(seed):
        sb3 = SB3VecEnv(GlimpseVectorEnv(tiny_source(50), 4, MDPConfig(init_location="random")))
        sb3.seed(seed)
        return sb3.reset()

    a, b, c = first_obs(3), first_obs(3), first_obs(4)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["location"], c["location"])


def test_sb3_vec_env_rejects_bad_flat_actions_without_changing_state():
    venv = GlimpseVectorEnv(tiny_source(), 2)
    sb3 = SB3VecEnv(venv, "box")
    sb3.reset()
    before = venv.core.loc.clone(), venv.core.num_fixations.clone()
    with pytest.raises(ValueError, match="must be finite"):
        sb3.step(np.full((2, 12), np.nan, np.float32))
    assert torch.equal(venv.core.loc, before[0]) and torch.equal(venv.core.num_fixations, before[1])


# ------------------------------------------------------------------ training runs


def _check_episodes(model, length: int) -> None:
    episodes = list(model.ep_info_buffer)
    assert episodes, "no episode finished during training"
    assert all(e["l"] == length and e["r"] in (0.0, 1.0) for e in episodes)


def _train(algo, policy: str, env, steps: int, n_steps: int, **policy_kwargs):
    """A tiny, seeded model of ``algo`` trained for ``steps`` env steps."""
    model = algo(
        policy,
        env,
        n_steps=n_steps,
        batch_size=256,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [32], **policy_kwargs},
    )
    model.learn(steps)
    assert model.num_timesteps == steps
    return model


def test_ppo_trains_through_the_flatten_wrapper(data_root):
    def make():
        env = gym.make("Glimpse/MNIST-v0", split="test")
        return Monitor(FlattenActionWrapper(env, "multidiscrete"))

    model = _train(PPO, "MultiInputPolicy", DummyVecEnv([make, make]), 2048, n_steps=256)
    _check_episodes(model, 6)


@pytest.mark.parametrize("mode", ["multidiscrete", "box"])
def test_ppo_trains_on_the_sb3_vec_env(mode, data_root):
    venv = SB3VecEnv(gym.make_vec("Glimpse/MNIST-v0", num_envs=16, split="test"), mode)
    model = _train(PPO, "MultiInputPolicy", venv, 4096, n_steps=64)
    _check_episodes(model, 6)
    action, _ = model.predict(venv.reset(), deterministic=True)
    assert venv.action_space.contains(action[0])


def test_recurrent_ppo_trains_on_the_sb3_vec_env(data_root):
    kwargs = {"split": "test", "dataset_kwargs": {"limit": 256}}
    venv = SB3VecEnv(gym.make_vec("Glimpse/ClutteredMNIST60-v0", num_envs=16, **kwargs))
    model = _train(
        RecurrentPPO, "MultiInputLstmPolicy", venv, 4096, n_steps=32, lstm_hidden_size=32
    )
    _check_episodes(model, 8)
