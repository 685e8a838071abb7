"""``agents.environments.build_envs``: what the trainer's envs take from the config.

``HardTrainConfig.init_location``: random first fixations in training and evaluation,
with evaluation reproducible (the same first fixations at every call); ``train_limit``
takes the first images; the number of classes comes from the dataset
(``len(dataset.classes)``), not a constant: 100 for ``twodigit100``, 10 for MNIST.
"""

from __future__ import annotations

import pytest
import torch

from agents.config import HardTrainConfig
from agents.environments import build_envs
from agents.evaluation import evaluate_policy
from agents.policies import POLICIES, build_ram
from agents.reinforce import predict
from soft_baselines.train import SoftTrainConfig, build_model, load_splits

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _setup(data_root, init_location: str):
    cfg = HardTrainConfig(
        init_location=init_location,
        data_root=str(data_root),
        train_limit=512,
        val_size=500,
        eval_batch_size=250,
        batch_size=64,
        device="cpu",
    ).resolved()
    train_env, evals = build_envs(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    policy = POLICIES["ram"](cfg, train_env.single_observation_space["glimpse"].shape, 1)
    return cfg, train_env, evals, policy.eval()


def test_random_first_fixations_and_reproducible_evaluation(data_root, monkeypatch):
    import agents.evaluation as train_module

    starts: list[torch.Tensor] = []

    def recording_predict(*args, **kw):
        preds, ro = predict(*args, **kw)
        starts.append(ro.locations[0].clone())
        return preds, ro

    monkeypatch.setattr(train_module, "predict", recording_predict)
    cfg, train_env, evals, policy = _setup(data_root, "random")
    assert train_env.config.init_location == "random"
    obs, _ = train_env.reset(seed=0)
    first = obs["location"]
    assert first.shape == (64, 2) and first.abs().max() <= 1
    assert first.std(0).min() > 0.3  # spread over the image, not the centre
    a = evaluate_policy(policy, evals["val"], cfg)
    b = evaluate_policy(policy, evals["val"], cfg)
    assert a == b
    n = len(starts) // 2  # evaluation batches per call
    assert n == 2 and starts[0].std(0).min() > 0.3  # random, and the same at every call
    assert all(torch.equal(x, y) for x, y in zip(starts[:n], starts[n:], strict=True))


def test_random_is_the_default_and_centre_an_option(data_root):
    assert HardTrainConfig().init_location == "random"  # issue 16: better on validation
    _, train_env, _, _ = _setup(data_root, "center")
    obs, _ = train_env.reset(seed=0)
    assert torch.equal(obs["location"], torch.zeros(64, 2))


def test_bad_init_location_is_a_clear_error(data_root):
    with pytest.raises(ValueError, match="init_location"):
        _setup(data_root, "corner")


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
