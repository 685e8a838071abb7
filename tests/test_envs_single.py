"""Tests for the Gymnasium faces: GlimpseEnv, GlimpseVectorEnv and the registered ids.

Registered ids are built with ``split="test"`` and, for the generated datasets, a small
``limit`` so that no full split is generated; behaviour that does not depend on the
dataset uses small in-memory ``(images, labels)`` sources. The two-digit proxy task
(``Glimpse/TwoDigit100-v0``) is registered apart from the papers' tasks.
"""

from __future__ import annotations

import functools
import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs import ActionError, FlattenActionWrapper, GlimpseEnv, GlimpseVectorEnv, MDPConfig
from glimpse.data import DatasetNotFoundError
from glimpse.viz import render_trajectory

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LIMIT = 32
"""Images generated per synthetic test split (``dataset_kwargs={"limit": LIMIT}``)."""

# The paper's settings, written out independently of envs.TASKS:
# id -> (canvas side, glimpses per target T, glimpse size g, scales k, targets).
EXPECTED = {
    "Glimpse/MNIST-v0": (28, 6, 8, 1, 1),
    "Glimpse/TranslatedMNIST60-v0": (60, 8, 12, 3, 1),
    "Glimpse/ClutteredMNIST60-v0": (60, 8, 12, 3, 1),
    "Glimpse/ClutteredMNIST100-v0": (100, 8, 12, 4, 1),
    "Glimpse/MultiMNIST-v0": (100, 8, 12, 4, 2),
    "Glimpse/DRAMPairsMNIST-v0": (100, 4, 12, 4, 1),
    "Glimpse/DRAMAdditionMNIST-v0": (100, 4, 12, 4, 1),
    "Glimpse/STNClutteredMNIST60-v0": (60, 8, 12, 3, 1),
}


def small_kwargs(env_id: str) -> dict:
    """Arguments building ``env_id`` quickly: the test split, a few images if generated."""
    kwargs: dict = {"split": "test"}
    if env_id != "Glimpse/MNIST-v0":
        kwargs["dataset_kwargs"] = {"limit": LIMIT}
    return kwargs


def tiny_source(n: int = 7, h: int = 20, w: int = 24, targets: int = 1, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, h, w), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n, targets) if targets > 1 else (n,), generator=gen)
    return images, labels


def action(x: float = 0.0, y: float = 0.0, label: int = 0, **extra) -> dict:
    return {"location": np.array([x, y], np.float32), "label": np.int64(label), **extra}


def random_actions(space: gym.Space, n: int, seed: int) -> list:
    space.seed(seed)
    return [space.sample() for _ in range(n)]


def assert_obs_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def core_state(env) -> dict[str, torch.Tensor]:
    core = env.unwrapped.core
    names = ("loc", "history", "num_fixations", "glimpses_this_target", "target", "done")
    names += ("labels", "predictions", "images")
    return {n: getattr(core, n).clone() for n in names}


def assert_state_equal(a: dict, b: dict) -> None:
    for k in a:
        assert torch.equal(a[k], b[k]), f"core state {k!r} changed"


# ------------------------------------------------------------------ registration


def test_every_task_is_registered_with_single_and_vector_entry_points():
    assert set(EXPECTED) == set(envs.TASKS)
    for env_id in EXPECTED:
        spec = gym.spec(env_id)
        assert spec.entry_point == "envs.single:GlimpseEnv"
        assert spec.vector_entry_point == "envs:make_vector_env"
        assert spec.namespace == "Glimpse"


@pytest.mark.parametrize("env_id", list(EXPECTED))
def test_registered_defaults_match_the_papers(env_id, data_root):
    side, steps, g, k, targets = EXPECTED[env_id]
    env = gym.make(env_id, **small_kwargs(env_id))
    core = env.unwrapped
    assert core.source.image_shape == (1, side, side)
    assert core.observation_space["glimpse"].shape == (k, 1, g, g)
    assert core.config.scale_factor == 2.0
    assert core.config.num_targets == targets
    assert core.config.num_glimpses == steps
    assert env.unwrapped.core.config.step_reward == 0.0 and not core.config.early_stop
    assert core.config.init_location == "center" and not core.config.relative
    _, info = env.reset(seed=0)
    label = info["label"]
    assert (np.shape(label) == (targets,)) if targets > 1 else isinstance(label, int)
    length, terminated = 0, False
    while not terminated:
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        length += 1
        assert not truncated
    assert length == steps * targets
    assert set(info) >= {"prediction", "correct", "target", "episode_correct"}


def test_keyword_arguments_override_glimpse_size_scales_steps_split_and_device(data_root):
    env = gym.make(
        "Glimpse/ClutteredMNIST60-v0",
        glimpse_size=6,
        num_scales=2,
        num_glimpses=3,
        split="val",
        data_root=str(data_root),
        device="cpu",
        dataset_kwargs={"limit": 5},
    )
    core = env.unwrapped
    assert core.observation_space["glimpse"].shape == (2, 1, 6, 6)
    assert core.source.image_shape == (1, 60, 60) and len(core.source) == 5
    assert core.source.images.device.type == "cpu" and core.core.device.type == "cpu"
    obs, _ = env.reset(seed=0)
    assert obs["glimpse"].shape == (2, 1, 6, 6)
    lengths = [env.step(action()) for _ in range(3)]
    assert [t[2] for t in lengths] == [False, False, True]


def test_split_and_data_root_reach_the_dataset(data_root, tmp_path):
    def size(split: str, root) -> int:
        return len(gym.make("Glimpse/MNIST-v0", split=split, data_root=root).unwrapped.source)

    assert size("test", data_root) == 10_000
    assert size("val", str(data_root)) == 5_000
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path)):
        size("test", str(tmp_path))


def test_make_vec_builds_the_batched_env_with_overrides(data_root):
    venv = gym.make_vec(
        "Glimpse/ClutteredMNIST100-v0",
        num_envs=3,
        glimpse_size=5,
        num_glimpses=2,
        split="test",
        dataset_kwargs={"limit": LIMIT},
        array_type="numpy",
    )
    assert isinstance(venv, GlimpseVectorEnv) and venv.num_envs == 3
    assert venv.single_observation_space["glimpse"].shape == (4, 1, 5, 5)
    assert venv.observation_space["glimpse"].shape == (3, 4, 1, 5, 5)
    obs, _ = venv.reset(seed=0)
    assert isinstance(obs["glimpse"], np.ndarray) and obs["glimpse"].shape == (3, 4, 1, 5, 5)
    assert venv.source.image_shape == (1, 100, 100)


def test_unknown_keyword_arguments_are_rejected(data_root):
    with pytest.raises(TypeError, match="glimps_size"):
        gym.make("Glimpse/MNIST-v0", split="test", glimps_size=4)
    with pytest.raises(TypeError, match="glimps_size"):
        gym.make_vec("Glimpse/MNIST-v0", num_envs=2, split="test", glimps_size=4)


# ------------------------------------------------------------------ Gymnasium's checker


def _check_clean(env: gym.Env) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("env_id", list(EXPECTED))
@pytest.mark.parametrize("render_mode", [None, "rgb_array"])
def test_registered_ids_pass_gymnasium_check_env_without_warnings(env_id, render_mode, data_root):
    _check_clean(gym.make(env_id, render_mode=render_mode, **small_kwargs(env_id)))


@pytest.mark.parametrize(
    "options",
    [
        {"early_stop": True},
        {"relative": True, "max_step": 0.25},
        {"init_location": "random", "clip_actions": True, "step_reward": -0.01},
        {"num_targets": 2, "num_glimpses": 2},
    ],
)
def test_variants_pass_gymnasium_check_env_without_warnings(options):
    targets = options.get("num_targets", 1)
    source = tiny_source(targets=targets)
    _check_clean(gym.make("Glimpse/MNIST-v0", source=source, render_mode="rgb_array", **options))


# ------------------------------------------------------------------ seeding


def _single_episodes(env: gym.Env, seed: int, episodes: int = 3) -> list:
    trace = []
    obs, info = env.reset(seed=seed)
    acts = iter(random_actions(env.action_space, 100, seed))
    for _ in range(episodes):
        trace.append((obs, info))
        terminated = False
        while not terminated:
            obs, reward, terminated, _, info = env.step(next(acts))
            trace.append((obs, reward, info))
        obs, info = env.reset()
    return trace


def _assert_traces_equal(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert_obs_equal(x[0], y[0])
        for u, v in zip(x[1:], y[1:], strict=True):
            if isinstance(u, dict):
                assert u.keys() == v.keys()
                for k in u:
                    np.testing.assert_array_equal(u[k], v[k])
            else:
                assert u == v


def test_single_env_same_seed_gives_identical_episodes(data_root):
    make = lambda: gym.make("Glimpse/MNIST-v0", split="test", init_location="random")  # noqa: E731
    a, b = _single_episodes(make(), 7), _single_episodes(make(), 7)
    _assert_traces_equal(a, b)
    c = _single_episodes(make(), 8)
    assert a[0][1]["index"] != c[0][1]["index"]
    assert not np.array_equal(a[0][0]["location"], c[0][0]["location"])


def test_single_env_reseeding_restarts_the_episode_stream():
    env = gym.make("Glimpse/MNIST-v0", source=tiny_source(50), init_location="random")
    first = [env.reset(seed=3)[1]["index"]] + [env.reset()[1]["index"] for _ in range(4)]
    again = [env.reset(seed=3)[1]["index"]] + [env.reset()[1]["index"] for _ in range(4)]
    assert first == again and len(set(first)) > 1


def _vector_trace(venv: GlimpseVectorEnv, seed: int, steps: int) -> list:
    obs, info = venv.reset(seed=seed)
    trace = [(obs, info["index"])]
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        act = {
            "location": torch.rand(venv.num_envs, 2, generator=gen) * 2 - 1,
            "label": torch.randint(0, 10, (venv.num_envs,), generator=gen),
        }
        obs, reward, terminated, _, info = venv.step(act)
        trace.append((obs, reward, terminated, info["index"]))
    return trace


def test_vector_env_same_seed_gives_identical_episodes(data_root):
    def make():
        return gym.make_vec("Glimpse/MNIST-v0", num_envs=4, split="test", init_location="random")

    a, b = _vector_trace(make(), 11, 14), _vector_trace(make(), 11, 14)
    for x, y in zip(a, b, strict=True):
        assert_obs_equal(x[0], y[0])
        for u, v in zip(x[1:], y[1:], strict=True):
            assert torch.equal(u, v)
    c = _vector_trace(make(), 12, 14)
    assert not torch.equal(a[0][1], c[0][1])
    assert not torch.equal(a[0][0]["location"], c[0][0]["location"])
    # Episodes of 6 steps: the trace covers two autoresets, with new images each time.
    assert not torch.equal(a[0][1], a[7][-1]) and not torch.equal(a[7][-1], a[14][-1])


def test_vector_env_reset_without_seed_goes_on_with_the_stream():
    venv = GlimpseVectorEnv(tiny_source(12), num_envs=4, shuffle=True)
    seen = [venv.reset(seed=0)[1]["index"]] + [venv.reset()[1]["index"] for _ in range(2)]
    # One shuffled epoch of 12 images over three resets of 4: every image exactly once.
    assert sorted(torch.cat(seen).tolist()) == list(range(12))
    again = venv.reset(seed=0)[1]["index"]
    assert torch.equal(again, seen[0])


# ------------------------------------------------------------------ single vs vector


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"relative": True, "max_step": 0.5, "num_glimpses": 4},
        {"num_targets": 2, "num_glimpses": 2, "num_scales": 2, "glimpse_size": 6},
    ],
)
def test_single_and_vector_envs_give_identical_observations(options):
    targets = options.get("num_targets", 1)
    source = tiny_source(targets=targets, h=30, w=26)
    cfg = MDPConfig(**options)
    n = 3
    indices = np.array([5, 0, 3])
    init = np.array([[0.0, 0.0], [0.5, -0.5], [-0.75, 0.25]], np.float32)
    venv = GlimpseVectorEnv(source, n, cfg, array_type="numpy")
    singles = [GlimpseEnv(source, **options) for _ in range(n)]
    vobs, vinfo = venv.reset(options={"indices": indices, "init_loc": init})
    sresets = [
        e.reset(options={"index": int(i), "init_loc": init[j]})
        for j, (e, i) in enumerate(zip(singles, indices, strict=True))
    ]
    np.testing.assert_array_equal(vinfo["index"], indices)
    gen = np.random.default_rng(0)
    for t in range(cfg.max_steps):
        for j, (obs, info) in enumerate(sresets):
            assert_obs_equal(obs, {k: v[j] for k, v in vobs.items()})
            np.testing.assert_array_equal(info["label"], vinfo["label"][j])
        bound = cfg.location_bound
        loc = gen.uniform(-bound, bound, size=(n, 2)).astype(np.float32)
        lab = gen.integers(0, 10, size=n)
        vobs, vrew, vterm, vtrunc, vinfo = venv.step({"location": loc, "label": lab})
        sresets = []
        for j, env in enumerate(singles):
            obs, rew, term, trunc, info = env.step(action(*loc[j], label=lab[j]))
            sresets.append((obs, info))
            assert rew == vrew[j] and term == vterm[j] and trunc == vtrunc[j]
            assert ("prediction" in info) == bool(vinfo["_prediction"][j])
        assert bool(vterm.all()) == (t == cfg.max_steps - 1)
    for j, (obs, info) in enumerate(sresets):
        assert_obs_equal(obs, {k: v[j] for k, v in vobs.items()})
        assert info["episode_correct"] == pytest.approx(vinfo["episode_correct"][j])


# ------------------------------------------------------------------ vector autoreset


def test_vector_env_next_step_autoreset():
    images, labels = tiny_source(7)
    cfg = MDPConfig(num_glimpses=2, step_reward=-0.25)
    venv = GlimpseVectorEnv((images, labels), 3, cfg, shuffle=False)
    obs, info = venv.reset(seed=0)
    assert info["index"].tolist() == [0, 1, 2]
    far = {"location": torch.full((3, 2), 0.5), "label": labels[:3].clone()}
    far["label"][1] = (far["label"][1] + 1) % 10
    obs, reward, terminated, truncated, info = venv.step(far)
    assert not terminated.any() and reward.tolist() == [-0.25, -0.25, -0.25]
    obs, reward, terminated, truncated, info = venv.step(far)
    assert terminated.all() and not truncated.any()
    assert reward.tolist() == [1.0, 0.0, 1.0]
    assert info["_episode_correct"].all() and info["episode_correct"].tolist() == [1.0, 0.0, 1.0]
    assert info["index"].tolist() == [0, 1, 2]  # the info of the ended episodes
    # The next step ignores the (invalid!) action, starts new episodes and pays nothing
    # (not even the step reward).
    nan = {"location": torch.full((3, 2), float("nan")), "label": torch.full((3,), 99)}
    obs, reward, terminated, truncated, info = venv.step(nan)
    assert reward.tolist() == [0.0, 0.0, 0.0]
    assert not terminated.any() and not truncated.any()
    assert info["index"].tolist() == [3, 4, 5]
    assert info["label"].tolist() == labels[3:6].tolist()
    assert "_prediction" not in info or not info["_prediction"].any()
    torch.testing.assert_close(obs["location"], torch.zeros(3, 2))
    torch.testing.assert_close(obs["step"], torch.full((3, 1), 0.5))
    fresh = GlimpseEnv((images, labels), num_glimpses=2)
    first, _ = fresh.reset(options={"index": 4})
    np.testing.assert_array_equal(obs["glimpse"][1].numpy(), first["glimpse"])
    # shuffle=False goes through the dataset in order and wraps around.
    for _ in range(3):
        obs, reward, terminated, truncated, info = venv.step(far)
    assert info["index"].tolist() == [6, 0, 1]


def test_vector_env_autoreset_with_episodes_of_different_lengths():
    images, labels = tiny_source(9)
    cfg = MDPConfig(num_glimpses=3, early_stop=True)
    venv = GlimpseVectorEnv((images, labels), 3, cfg, shuffle=False)
    venv.reset(seed=0)
    loc = torch.zeros(3, 2)
    lab = labels[:3].clone()
    _, reward, terminated, _, info = venv.step(
        {"location": loc, "label": lab, "stop": torch.tensor([True, False, False])}
    )
    assert terminated.tolist() == [True, False, False] and reward.tolist() == [1.0, 0.0, 0.0]
    assert info["_prediction"].tolist() == [True, False, False]
    stop = torch.tensor([True, True, False])  # slot 0's stop is ignored: it is resetting
    obs, reward, terminated, _, info = venv.step({"location": loc, "label": lab, "stop": stop})
    assert terminated.tolist() == [False, True, False]
    assert reward.tolist() == [0.0, 1.0, 0.0]
    assert info["index"].tolist() == [3, 1, 2]
    torch.testing.assert_close(obs["step"], torch.tensor([[1 / 3], [2 / 3], [1.0]]))
    _, reward, terminated, _, info = venv.step({"location": loc, "label": lab})
    assert terminated.tolist() == [False, False, True]
    assert info["index"].tolist() == [3, 4, 2]


def test_vector_env_shuffle_visits_every_image_once_per_epoch():
    venv = GlimpseVectorEnv(tiny_source(8), 4, MDPConfig(num_glimpses=1), shuffle=True)
    _, info = venv.reset(seed=1)
    seen = [info["index"]]
    act = {"location": torch.zeros(4, 2), "label": torch.zeros(4, dtype=torch.long)}
    venv.step(act)
    _, _, _, _, info = venv.step(act)  # autoreset: the rest of the epoch
    seen.append(info["index"])
    assert sorted(torch.cat(seen).tolist()) == list(range(8))
    assert torch.cat(seen).tolist() != list(range(8))


def test_vector_env_info_keys_and_masks():
    images, labels = tiny_source(5, targets=2)
    venv = GlimpseVectorEnv(
        (images, labels),
        2,
        MDPConfig(num_targets=2, num_glimpses=1),
        shuffle=False,
        array_type="numpy",
    )
    _, info = venv.reset(seed=0)
    assert set(info) == {"label", "_label", "index", "_index"}
    np.testing.assert_array_equal(info["label"], labels[:2].numpy())
    right = {"location": np.zeros((2, 2), np.float32), "label": labels[:2, 0].numpy()}
    _, reward, terminated, _, info = venv.step(right)
    assert info["_prediction"].all() and not info["_episode_correct"].any()
    assert info["target"].tolist() == [0, 0] and info["correct"].all()
    assert reward.tolist() == [1.0, 1.0] and not terminated.any()
    wrong = {"location": np.zeros((2, 2), np.float32), "label": (labels[:2, 1].numpy() + 1) % 10}
    _, reward, terminated, _, info = venv.step(wrong)
    assert terminated.all() and reward.tolist() == [0.0, 0.0]
    assert info["_episode_correct"].all() and info["episode_correct"].tolist() == [0.5, 0.5]
    assert info["target"].tolist() == [1, 1] and not info["correct"].any()
    np.testing.assert_array_equal(info["prediction"], wrong["label"])


def test_vector_env_observations_match_the_spaces_in_both_array_types():
    for array_type in ("torch", "numpy"):
        venv = GlimpseVectorEnv(tiny_source(), 3, MDPConfig(num_scales=2), array_type=array_type)
        obs, _ = venv.reset(seed=0)
        obs, reward, *_ = venv.step(
            {"location": np.full((3, 2), 0.3, np.float32), "label": np.zeros(3, np.int64)}
        )
        kind = torch.Tensor if array_type == "torch" else np.ndarray
        assert all(isinstance(v, kind) for v in obs.values()) and isinstance(reward, kind)
        numpy_obs = {k: np.asarray(v) for k, v in obs.items()}
        assert venv.observation_space.contains(numpy_obs)


# ------------------------------------------------------------------ single-env info and reset


def test_single_env_info_keys():
    images, labels = tiny_source()
    env = GlimpseEnv((images, labels), num_glimpses=2)
    _, info = env.reset(options={"index": 3})
    assert info == {"label": int(labels[3]), "index": 3}
    _, reward, terminated, _, info = env.step(action(0.5, 0.5))
    assert info == {"label": int(labels[3]), "index": 3} and reward == 0.0 and not terminated
    wrong = (int(labels[3]) + 1) % 10
    _, reward, terminated, truncated, info = env.step(action(label=wrong))
    assert terminated and not truncated and reward == 0.0
    assert info == {
        "label": int(labels[3]),
        "index": 3,
        "prediction": wrong,
        "correct": False,
        "target": 0,
        "episode_correct": 0.0,
    }


def test_single_env_reset_options():
    env = GlimpseEnv(tiny_source(), num_glimpses=2)
    obs, info = env.reset(options={"index": 6, "init_loc": (0.25, -0.5)})
    assert info["index"] == 6
    np.testing.assert_array_equal(obs["location"], np.array([0.25, -0.5], np.float32))
    np.testing.assert_array_equal(obs["step"], np.array([0.5], np.float32))
    for bad, match in [
        ({"index": 7}, r"options\['index'\] must be an int in \[0, 7\), got 7"),
        ({"index": 1.0}, r"must be an int in \[0, 7\), got 1.0"),
        ({"indx": 1}, r"unknown reset options \['indx'\]"),
        ({"init_loc": (2.0, 0.0)}, r"init_loc must be finite and in \[-1, 1\]"),
    ]:
        before = core_state(env)
        with pytest.raises(ValueError, match=match):
            env.reset(options=bad)
        assert_state_equal(before, core_state(env))
        assert env.index == 6


# ------------------------------------------------------------------ bad input, single env


BAD_ACTIONS = [
    (
        "nan",
        action(float("nan"), 0.0),
        ActionError,
        r"finite, got NaN/inf at index 0: \[nan, 0.0\]",
    ),
    (
        "inf",
        action(0.0, float("inf")),
        ActionError,
        r"finite, got NaN/inf at index 0: \[0.0, inf\]",
    ),
    ("range", action(1.5, 0.0), ActionError, r"\[-1, 1\]\^2, got index 0: \[1.5, 0.0\]"),
    (
        "loc-shape",
        {"location": np.zeros(3, np.float32), "label": 0},
        ActionError,
        r"action\['location'\] must be 2 numbers \(x, y\), shape \(2,\), got "
        r"array\(\[0., 0., 0.\], dtype=float32\) of shape \(3,\)$",
    ),
    (
        "loc-string",
        {"location": "center", "label": 0},
        ActionError,
        r"action\['location'\] must be 2 numbers \(x, y\), shape \(2,\), got 'center'",
    ),
    (
        "loc-ragged",
        {"location": [0.0, [0.5, 0.5]], "label": 0},
        ActionError,
        r"must be 2 numbers \(x, y\), shape \(2,\), got \[0.0, \[0.5, 0.5\]\]$",
    ),
    (
        "loc-dtype",
        {"location": np.zeros(2, np.int64), "label": 0},
        ValueError,
        "action\\['location'\\] must be floating point, got int64",
    ),
    ("label-high", action(label=10), ActionError, r"class index in \[0, 10\), got 10"),
    ("label-low", action(label=-3), ActionError, r"class index in \[0, 10\), got -3"),
    (
        "label-float",
        action(label=0) | {"label": 2.0},
        ActionError,
        r"action\['label'\] must be one integer class index in \[0, 10\), got 2.0$",
    ),
    (
        "label-shape",
        action() | {"label": np.array([1, 2])},
        ActionError,
        r"one integer class index in \[0, 10\), got array\(\[1, 2\]\)",
    ),
    (
        "label-string",
        action() | {"label": "3"},
        ActionError,
        r"one integer class index in \[0, 10\), got '3'",
    ),
    (
        # numpy counts timedelta64 as an integer type; int() of NaT was a TypeError.
        "label-timedelta",
        action() | {"label": np.array("NaT", "timedelta64[Y]")},
        ActionError,
        r"one integer class index in \[0, 10\), got array\('NaT', dtype='timedelta64\[Y\]'\)$",
    ),
    (
        "label-huge-uint64",
        action() | {"label": np.uint64(2**64 - 1)},
        ActionError,
        r"class index in \[0, 10\), got 18446744073709551615$",
    ),
    (
        # Scored as class 0 before: the action space has a label, so it is required.
        "label-missing",
        {"location": np.zeros(2, np.float32)},
        ActionError,
        r"action must be a dict with 'location': \(2,\) floats, 'label': an int in "
        r"\[0, 10\); 'label' missing \(keys \['location'\]\)$",
    ),
    (
        "unknown-key",
        action() | {"lable": 3},
        ActionError,
        r"action must be a dict with .*; got unknown key\(s\) \['lable'\]$",
    ),
    ("stop-disabled", action(stop=1), ActionError, "early_stop=False"),
    ("stop-shape", action(stop=np.array([0, 1])), ActionError, r"action\['stop'\] must be one 0/1"),
    ("stop-string", action(stop="yes"), ActionError, r"action\['stop'\] must be one 0/1 .* 'yes'$"),
    (
        "not-a-dict",
        np.zeros(2, np.float32),
        ActionError,
        r"action must be a dict with 'location'.*; got ndarray array\(\[0., 0.\]",
    ),
    ("no-location", {"label": 1}, ActionError, r"'location' missing \(keys \['label'\]\)$"),
]


@pytest.mark.parametrize(
    ("name", "bad", "error", "match"), BAD_ACTIONS, ids=[b[0] for b in BAD_ACTIONS]
)
def test_single_env_bad_actions_raise_and_leave_the_env_unchanged(name, bad, error, match):
    source = tiny_source()
    env, twin = GlimpseEnv(source, num_glimpses=3), GlimpseEnv(source, num_glimpses=3)
    for e in (env, twin):
        e.reset(seed=0)
        e.step(action(0.5, 0.25))
    before = core_state(env)
    with pytest.raises(error, match=match):
        env.step(bad)
    assert_state_equal(before, core_state(env))
    # The env goes on exactly as its twin that never saw the bad action.
    for a in (action(-0.5, 0.5), action(label=1)):
        got, want = env.step(a), twin.step(a)
        assert_obs_equal(got[0], want[0])
        assert got[1:] == want[1:]


def test_single_env_bad_stop_value_with_early_stop():
    env = GlimpseEnv(tiny_source(), early_stop=True)
    env.reset(seed=0)
    assert env.action_space["stop"] == gym.spaces.Discrete(2)
    before = core_state(env)
    with pytest.raises(ActionError, match=r"stop must be 0/1 or bool, got \[2\]"):
        env.step(action(stop=np.int64(2)))
    assert_state_equal(before, core_state(env))
    _, _, terminated, _, info = env.step(action(label=0, stop=np.int64(1)))
    assert terminated and "prediction" in info


def test_single_env_step_after_the_episode_ended_raises():
    env = GlimpseEnv(tiny_source(), num_glimpses=1)
    env.reset(seed=0)
    _, _, terminated, _, _ = env.step(action())
    assert terminated
    before = core_state(env)
    with pytest.raises(ActionError, match=r"episode 0 has ended; call reset\(\) before step\(\)"):
        env.step(action())
    assert_state_equal(before, core_state(env))
    env.reset()
    env.step(action())


def test_single_env_clip_actions_is_an_option():
    env = gym.make("Glimpse/MNIST-v0", source=tiny_source(), clip_actions=True)
    env.reset(seed=0)
    obs, *_ = env.step(action(1.5, -7.0))
    np.testing.assert_array_equal(obs["location"], np.array([1.0, -1.0], np.float32))


# ------------------------------------------------------------------ bad input, vector env


def test_vector_env_bad_actions_raise_and_leave_the_env_unchanged():
    source = tiny_source()
    cfg = MDPConfig(num_glimpses=3)
    venv, twin = GlimpseVectorEnv(source, 3, cfg), GlimpseVectorEnv(source, 3, cfg)
    ok = {"location": torch.full((3, 2), 0.25), "label": torch.zeros(3, dtype=torch.long)}
    for v in (venv, twin):
        v.reset(seed=0)
        v.step(ok)
    nan = {"location": ok["location"].clone(), "label": ok["label"]}
    nan["location"][2, 1] = float("nan")
    far = {"location": ok["location"] * 5, "label": ok["label"]}
    cases = [
        (nan, ActionError, r"NaN/inf at index 2: \[0.25, nan\]"),
        (far, ActionError, r"\[-1, 1\]\^2, got index 0: \[1.25, 1.25\]"),
        (
            {"location": torch.zeros(4, 2), "label": ok["label"]},
            ActionError,
            r"\(3, 2\), got \(4, 2\)",
        ),
        (
            {"location": ok["location"], "label": torch.tensor([0, 11, 0])},
            ActionError,
            "got 11 at index 1",
        ),
        ({"location": ok["location"].long(), "label": ok["label"]}, ActionError, "floating point"),
        (
            {"location": ok["location"], "label": ok["label"].float()},
            ActionError,
            "integer class index",
        ),
        (ok["location"], ValueError, "actions must be a dict"),
        # Scored as class 0 on a classifying step before (the next step classifies).
        (
            {"location": ok["location"]},
            ActionError,
            r"actions must be a dict with 'location': \(3, 2\) floats, 'label': \(3,\) ints "
            r"in \[0, 10\); 'label' missing \(keys \['location'\]\)$",
        ),
        (ok | {"lable": ok["label"]}, ActionError, r"unknown key\(s\) \['lable'\]$"),
        (
            {"location": "center", "label": ok["label"]},
            ActionError,
            r"actions\['location'\] must be a tensor or array of numbers, got 'center'$",
        ),
        (ok | {"stop": torch.zeros(2, dtype=torch.bool)}, ActionError, r"\(3,\), got \(2,\)"),
        (
            {"location": ok["location"], "label": np.array([0, 2**64 - 1, 0], np.uint64)},
            ActionError,
            "got 18446744073709551615 at index 1",
        ),
    ]
    for bad, error, match in cases:
        before = core_state(venv)
        with pytest.raises(error, match=match):
            venv.step(bad)
        assert_state_equal(before, core_state(venv))
    for _ in range(4):  # through an autoreset, in lockstep with the twin
        got, want = venv.step(ok), twin.step(ok)
        assert_obs_equal(got[0], want[0])
        assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])


def test_vector_env_rejects_bad_construction_and_reset_arguments():
    source = tiny_source()
    with pytest.raises(ValueError, match="array_type"):
        GlimpseVectorEnv(source, 2, array_type="jax")
    with pytest.raises(ValueError, match=r"render_index must be in \[0, 2\), got 2"):
        GlimpseVectorEnv(source, 2, render_mode="rgb_array", render_index=2)
    with pytest.raises(ValueError, match="num_targets=2 but the dataset has 1"):
        GlimpseVectorEnv(source, 2, MDPConfig(num_targets=2))
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match=rf"num_envs must be a positive int, got {bad!r}$"):
            GlimpseVectorEnv(source, bad)
        with pytest.raises(ValueError, match=rf"num_envs must be a positive int, got {bad!r}$"):
            envs.make_vector_env(num_envs=bad, source=source)
    venv = GlimpseVectorEnv(source, 2)
    with pytest.raises(ValueError, match=r"unknown reset options \['index'\]"):
        venv.reset(options={"index": 0})
    with pytest.raises(
        ValueError, match=r"indices must be 2 dataset indices in \[0, 7\), got \[0, 7\]"
    ):
        venv.reset(options={"indices": [0, 7]})


@pytest.mark.parametrize("seed", ["x", -1, 1.5, np.int64(3), [0, -1]])
def test_vector_env_reset_seed_follows_the_single_env_rule(seed):
    """An int >= 0 or None, with Gymnasium's own message, and nothing changes on refusal."""
    source = tiny_source()
    env, venv = GlimpseEnv(source), GlimpseVectorEnv(source, 2)
    venv.reset(seed=0)
    before, stream = core_state(venv), venv.stream.state_dict()
    with pytest.raises(gym.error.Error) as single:
        env.reset(seed=seed[-1] if isinstance(seed, list) else seed)
    with pytest.raises(gym.error.Error, match=f"^{re.escape(str(single.value))}$"):
        venv.reset(seed=seed)
    assert_state_equal(before, core_state(venv))
    assert torch.equal(venv.stream.state_dict()["order"], stream["order"])
    assert venv.stream.state_dict()["pos"] == stream["pos"]


def test_cuda_device_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    source = tiny_source()
    makers = [
        lambda: envs.make_vector_env(2, source=source, device="cuda"),
        lambda: GlimpseVectorEnv(source, 2, device=torch.device("cuda")),
        lambda: GlimpseEnv(source, device="cuda"),
    ]
    for make in makers:
        with pytest.raises(
            ValueError, match=r"^device 'cuda' requested but CUDA is not available; use 'cpu'$"
        ):
            make()


# ------------------------------------------------------------------ rendering


def test_single_env_renders_the_trajectory_so_far():
    images, labels = tiny_source(h=28, w=36)
    env = gym.make("Glimpse/MNIST-v0", source=(images, labels), render_mode="rgb_array")
    env.reset(options={"index": 2, "init_loc": (-0.5, -0.5)})
    first = env.render()
    assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
    env.step(action(0.5, 0.5))
    second = env.render()
    assert second.shape == first.shape and not np.array_equal(first, second)
    expected = render_trajectory(
        images[2].float() / 255,
        np.array([[-0.5, -0.5], [0.5, 0.5]]),
        8,
        1,
        2.0,
        label=int(labels[2]),
    )[-1]
    np.testing.assert_array_equal(second, expected)
    plain = gym.make("Glimpse/MNIST-v0", source=(images, labels))
    plain.reset(seed=0)
    assert plain.render() is None


def test_vector_env_renders_the_chosen_sub_env():
    images, labels = tiny_source(h=28, w=28)
    cfg = MDPConfig(num_scales=2)
    venv = GlimpseVectorEnv(
        (images, labels), 3, cfg, shuffle=False, render_mode="rgb_array", render_index=1
    )
    venv.reset(options={"init_loc": np.array([[0, 0], [0.25, 0.5], [-0.5, 0.0]], np.float32)})
    loc = torch.tensor([[0.9, 0.9], [-0.25, -0.5], [0.0, 0.0]])
    venv.step({"location": loc, "label": torch.zeros(3, dtype=torch.long)})
    frame = venv.render()
    expected = render_trajectory(
        images[1].float() / 255,
        np.array([[0.25, 0.5], [-0.25, -0.5]]),
        8,
        2,
        2.0,
        label=int(labels[1]),
    )[-1]
    np.testing.assert_array_equal(frame, expected)
    venv.render_index = 0
    assert not np.array_equal(venv.render(), frame)
    assert GlimpseVectorEnv((images, labels), 2).render() is None


# ------------------------------------------------------------------ CUDA


@pytest.mark.gpu
def test_vector_env_on_cuda_matches_cpu():
    source = tiny_source(h=60, w=60)
    cfg = MDPConfig(glimpse_size=12, num_scales=3, num_glimpses=4)
    out = {}
    for device in ("cpu", "cuda"):
        venv = GlimpseVectorEnv(source, 5, cfg, device=device)
        obs, _ = venv.reset(seed=0)
        assert obs["glimpse"].device.type == device
        gen = torch.Generator().manual_seed(0)
        trace = []
        for _ in range(6):
            act = {
                "location": (torch.rand(5, 2, generator=gen) * 2 - 1).to(device),
                "label": torch.randint(0, 10, (5,), generator=gen).to(device),
            }
            obs, reward, terminated, _, _ = venv.step(act)
            trace.append((obs["glimpse"].cpu(), reward.cpu(), terminated.cpu()))
        out[device] = trace
    for (g0, r0, t0), (g1, r1, t1) in zip(out["cpu"], out["cuda"], strict=True):
        torch.testing.assert_close(g0, g1, rtol=1e-5, atol=1e-5)
        assert torch.equal(r0, r1) and torch.equal(t0, t1)


def test_vector_reset_with_bad_options_does_not_reseed():
    gen = torch.Generator().manual_seed(0)
    source = (
        torch.randint(0, 256, (20, 1, 12, 12), generator=gen, dtype=torch.uint8),
        torch.randint(0, 10, (20,), generator=gen),
    )
    venv = GlimpseVectorEnv(source, 4, MDPConfig(glimpse_size=4, num_glimpses=2))
    twin = GlimpseVectorEnv(source, 4, MDPConfig(glimpse_size=4, num_glimpses=2))
    venv.reset(seed=5)
    twin.reset(seed=5)
    with pytest.raises(ValueError, match="unknown reset options"):
        venv.reset(seed=99, options={"nope": 1})
    _, info = venv.reset()
    _, twin_info = twin.reset()
    assert torch.equal(info["index"], twin_info["index"])


# ------------------------------------------------------------------ property: any action

# Whatever an agent or a newcomer sends to ``step``, each call either succeeds or raises
# ActionError (a ValueError, the env's documented error) with a one-line message naming the
# key at fault, and a rejected action leaves the env exactly as it was.

PROPERTY_CONFIGS = {
    "plain": {},
    "early-stop-relative": {"early_stop": True, "relative": True, "max_step": 0.5},
    "parts": {"num_parts": 2, "context_size": 4},
}
PROPERTY_SOURCE = tiny_source(n=5, h=12, w=12)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.complex_numbers(allow_nan=True),
    st.text(max_size=4),
    st.binary(max_size=3),
)
_arrays = hnp.arrays(
    dtype=st.one_of(hnp.scalar_dtypes(), hnp.unicode_string_dtypes(max_len=3)),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)
_nested = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=8)


def _to_torch(value: np.ndarray):
    """The array as a torch tensor where torch has its dtype, else the array itself."""
    try:
        return torch.from_numpy(np.ascontiguousarray(value))
    except (TypeError, ValueError):  # strings, objects, non-native byte order
        return value


_anything = st.one_of(
    _scalars,
    _nested,
    _arrays,
    _arrays.map(_to_torch),
    st.dictionaries(st.text(max_size=3), _scalars, max_size=2),
)


@st.composite
def _actions(draw, cfg: MDPConfig, batch: int | None):
    """``(action, culprit, must_fail)``: a valid action with at most one thing broken, the
    word a rejection must name (``None`` where nothing was broken), and whether it must be
    rejected (a missing or unknown key, or no dict at all; a replaced value may be valid)."""
    lead = () if batch is None else (batch,)
    bound = cfg.location_bound
    loc = draw(
        hnp.arrays(np.float32, (*lead, *cfg.loc_shape), elements=st.floats(-bound, bound, width=32))
    )
    labels = draw(hnp.arrays(np.int64, lead, elements=st.integers(0, cfg.num_classes - 1)))
    action = {"location": loc, "label": labels if lead else np.int64(labels)}
    if cfg.early_stop and draw(st.booleans()):
        action["stop"] = (
            draw(hnp.arrays(np.bool_, lead)) if lead else np.int64(draw(st.integers(0, 1)))
        )
    if batch is not None and draw(st.booleans()):
        action = {k: torch.from_numpy(np.asarray(v)) for k, v in action.items()}
    how = draw(
        st.sampled_from(["valid", "replace", "replace", "replace", "drop", "extra", "other"])
    )
    if how == "replace":
        key = draw(st.sampled_from(["location", "label", "stop"]))
        action[key] = draw(_anything)
        return action, key, False
    if how == "drop":
        key = draw(st.sampled_from(["location", "label"]))
        del action[key]
        return action, key, True
    if how == "extra":
        key = draw(st.one_of(st.text(max_size=4), st.integers(), st.none()))
        if key in action or key == "stop":
            return action, None, False
        action[key] = draw(_scalars)
        return action, repr(key), True
    if how == "other":
        return draw(_anything), "action", True
    return action, None, False


@functools.cache
def _property_env(name: str, vector: bool) -> GlimpseEnv | GlimpseVectorEnv:
    """One env per configuration for all examples (each example starts with a seeded reset)."""
    kwargs = {"glimpse_size": 4, "num_glimpses": 2, **PROPERTY_CONFIGS[name]}
    if vector:
        return GlimpseVectorEnv(PROPERTY_SOURCE, 3, MDPConfig(**kwargs), array_type="numpy")
    return GlimpseEnv(PROPERTY_SOURCE, **kwargs)


def _check_rejection(err: Exception, culprit: str | None) -> None:
    message = str(err)
    assert isinstance(err, ActionError), f"{type(err).__name__}: {message}"
    assert message and "\n" not in message and len(message) < 400, repr(message)
    if culprit is not None:
        assert culprit in message, f"{culprit!r} not named in {message!r}"


def _face_state(env: GlimpseEnv | GlimpseVectorEnv) -> dict[str, torch.Tensor]:
    """All that a rejected action must leave alone: the core's state, the glimpse seen now
    and the face's own bookkeeping (dataset index; vector: indices, autoreset, stream)."""
    state = core_state(env) | {"glimpse": env.unwrapped.core.observe()["glimpse"]}
    if isinstance(env, GlimpseEnv):
        return state | {"index": torch.tensor(env.index)}
    stream = env.stream.state_dict()
    return state | {
        "indices": env.indices.clone(),
        "needs_reset": env._needs_reset.clone(),
        "order": stream["order"].clone(),
        "pos": torch.tensor(stream["pos"]),
    }


@pytest.mark.parametrize("face", ["single", "vector"])
@pytest.mark.parametrize("name", list(PROPERTY_CONFIGS))
@settings(max_examples=100, deadline=None)
@given(data=st.data(), steps_before=st.integers(0, 2))
def test_property_any_action_steps_or_is_rejected_cleanly(face, name, data, steps_before):
    env = _property_env(name, vector=face == "vector")
    batch = env.num_envs if face == "vector" else None
    lead = () if batch is None else (batch,)
    env.reset(seed=0)
    # Moves without stop: one keeps a single episode running; after two, every sub-env of
    # the vector env restarts on the next step (whose action it then ignores).
    for _ in range(steps_before if batch else min(steps_before, 1)):
        zeros = np.zeros((*lead, *env.config.loc_shape), np.float32)
        env.step({"location": zeros, "label": np.zeros(lead, np.int64)})
    action, culprit, must_fail = data.draw(_actions(env.config, batch))
    before = _face_state(env)
    try:
        obs, *_ = env.step(action)
    except Exception as err:
        _check_rejection(err, culprit)
        assert_state_equal(before, _face_state(env))
    else:
        assert not must_fail, f"accepted {action!r}"
        assert env.observation_space.contains(obs)


def test_vector_env_reports_its_episodes_as_copies():
    """``GlimpseVectorEnv.episodes``: images, labels and fixations so far, what a renderer
    needs without reaching into the engine; copies, so drawing cannot change an episode."""
    images = torch.rand(5, 1, 28, 28)
    venv = GlimpseVectorEnv((images, torch.arange(5)), 3, MDPConfig(num_glimpses=3), shuffle=False)
    venv.reset(seed=0, options={"indices": torch.tensor([4, 0, 2])})
    loc = torch.tensor([[0.5, -0.5], [0.0, 0.25], [-1.0, 1.0]])
    venv.step({"location": loc, "label": torch.zeros(3, dtype=torch.long)})
    ep = venv.episodes(2)
    torch.testing.assert_close(ep.images, images[[4, 0]])
    assert ep.labels.tolist() == [[4], [0]] and ep.fixations.shape == (2, 3, 2)
    torch.testing.assert_close(ep.fixations[:, 1], loc[:2])
    assert (ep.fixations[:, 0] == 0).all() and (ep.fixations[:, 2] == 0).all()  # centre; not yet
    ep.images.zero_()
    ep.fixations.fill_(9.0)
    assert venv.episodes().images[0].equal(images[4]) and venv.episodes().fixations.abs().max() < 9
    with pytest.raises(ValueError, match=r"n must be an int in \[1, 3\]"):
        venv.episodes(4)


TASK = "Glimpse/TwoDigit100-v0"


# ------------------------------------------------------------------ the registered task
def test_twodigit_task_is_registered_apart_from_the_papers_tasks(data_root):
    assert TASK not in envs.TASKS  # TASKS holds the papers' settings only
    assert envs.PROXY_TASKS[TASK]["num_classes"] == 100
    env = gym.make(TASK, split="test", dataset_kwargs={"limit": 16})
    core = env.unwrapped
    assert core.source.image_shape == (1, 100, 100)
    assert core.config.num_classes == 100
    # ClutteredMNIST100's glimpse settings (same canvas)
    ref = envs.TASKS["Glimpse/ClutteredMNIST100-v0"]
    assert core.config.glimpse_size == ref["glimpse_size"] == 12
    assert core.config.num_scales == ref["num_scales"] == 4
    assert core.config.num_glimpses == ref["num_glimpses"] == 8
    assert int(core.source.labels.max()) >= 10  # labels beyond 10 classes are accepted
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(FlattenActionWrapper(env, "multidiscrete"))
    assert [str(w.message) for w in caught if "unconventional shape" not in str(w.message)] == []


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"num_scales": 3, "glimpse_size": 6}, {"relative": True, "early_stop": True}],
    ids=["default", "scales", "relative-early-stop"],
)
def test_single_env_fast_path_matches_the_general_path(kwargs):
    # The batch-of-one path of the core (scalar_path) against the general tensor path, on
    # the same actions: observations, rewards, terminations, infos and every error alike.
    source = tiny_source()
    env, twin = GlimpseEnv(source, **kwargs), GlimpseEnv(source, **kwargs)
    twin.core.scalar_path = False
    assert env.core.scalar_path
    assert_obs_equal(env.reset(seed=3)[0], twin.reset(seed=3)[0])
    bad = [b[1] for b in BAD_ACTIONS]
    good = random_actions(env.action_space, 60, seed=1)
    errors = 0
    for i, act in enumerate(good):
        for a in (bad[i % len(bad)], act):  # the "bad" ones may be valid in this config
            outcomes = []
            for e in (env, twin):
                before = core_state(e)
                try:
                    outcomes.append(e.step(a))
                except ValueError as err:
                    outcomes.append(str(err))
                    assert_state_equal(before, core_state(e))
            got, want = outcomes
            if isinstance(got, str):
                assert got == want
                errors += 1
                continue
            assert_obs_equal(got[0], want[0])
            assert got[1:] == want[1:]
            assert [type(v) for v in got[1:4]] == [type(v) for v in want[1:4]]
            if got[2]:
                assert_obs_equal(env.reset()[0], twin.reset()[0])
    assert errors > 20
