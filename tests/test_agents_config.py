"""The 100-class two-digit proxy (``twodigit100``, issue 7) through the plain trainers:
``scripts/train_ram.py --task twodigit100`` and ``scripts/train_soft.py --dataset
twodigit100``. The number of classes comes from the dataset (``len(dataset.classes)``),
not a constant: the classifiers have 100 outputs, MNIST runs keep 10."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from agents.config import HardTrainConfig
from agents.environments import build_envs
from agents.policies import build_ram
from envs import FlattenActionWrapper
from glimpse.training import load_checkpoint
from soft_baselines.train import SoftTrainConfig, build_model, load_splits

REPO = Path(__file__).resolve().parent.parent
TASK = "Glimpse/TwoDigit100-v0"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _script_main(name: str, args: list[str]):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(args)


def _run_dir(root: Path) -> Path:
    (run_dir,) = root.iterdir()
    return run_dir


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


def test_num_classes_come_from_the_dataset(data_root):
    cfg = HardTrainConfig(
        task="twodigit100", data_root=str(data_root), train_limit=40, eval_limit=20
    ).resolved()
    assert cfg.mdp().num_classes == 100  # the registered default, e.g. for playback
    train, evals = build_envs(cfg, torch.device("cpu"))
    assert train.config.num_classes == 100
    assert (len(train.source), len(evals["val"].source), len(evals["test"].source)) == (40, 20, 20)
    # the limited split is the start of the full one (generated alone, same images)
    assert int(train.source.labels.max()) < 100
    shape = train.single_observation_space["glimpse"].shape
    assert build_ram(cfg, shape, 1).classifier.out_features == 100
    mnist = HardTrainConfig(data_root=str(data_root)).resolved()
    assert build_ram(mnist, (1, 1, 8, 8), 1).classifier.out_features == 10
    soft = load_splits(
        SoftTrainConfig(
            dataset="twodigit100", data_root=str(data_root), train_limit=30, eval_limit=10
        ),
        torch.device("cpu"),
    )
    assert soft.num_classes == 100
    assert [len(soft[s]) for s in ("train", "val", "test")] == [30, 10, 10]
    assert torch.equal(soft["train"].labels, train.source.labels[:30])
    assert build_model(SoftTrainConfig(), (1, 100, 100), soft.num_classes).head.out_features == 100


@pytest.mark.parametrize("name", ["train_limit", "eval_limit"])
def test_negative_limits_raise(name):
    with pytest.raises(ValueError, match=f"--{name.replace('_', '-')} must be >= 0"):
        HardTrainConfig(task="twodigit100", **{name: -1}).resolved()
    with pytest.raises(ValueError, match=f"--{name.replace('_', '-')} must be >= 0"):
        SoftTrainConfig(dataset="twodigit100", **{name: -1}).resolved()


# ------------------------------------------------------------------ the scripts
COMMON = ["--device", "cpu", "--threads", "1", "--epochs", "1", "--max-batches-per-epoch", "2"]
COMMON += ["--batch-size", "16", "--train-limit", "64", "--eval-limit", "32"]
COMMON += ["--eval-batch-size", "32", "--run-name", "r"]


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


def test_train_soft_script_on_twodigit100(data_root, tmp_path):
    args = [*COMMON, "--dataset", "twodigit100", "--module", "none", "--widths", "4", "8"]
    result = _script_main(
        "train_soft", [*args, "--data-root", str(data_root), "--runs-root", str(tmp_path)]
    )
    run_dir = _run_dir(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result))
    details = metrics["details"]
    assert (details["dataset"], details["num_classes"], metrics["images_seen"]) == (
        "twodigit100",
        100,
        2 * 16,
    )
    model = load_checkpoint(run_dir / "last.pt")["model"]
    assert model["head.weight"].shape == (100, 8)
