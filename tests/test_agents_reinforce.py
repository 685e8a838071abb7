"""The single-trajectory evaluation protocol of hard agents (issue 16).

Random first fixations and sampled locations are drawn per (evaluation seed, image index,
sample index), so an evaluation does not depend on the batch size; the Monte-Carlo
protocol averages the class probabilities of exactly those episodes.
"""

from __future__ import annotations

import pytest
import torch

from agents.ram import RAM
from agents.reinforce import episode_draws, episode_key, predict
from envs import GlimpseVectorEnv, MDPConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _source(n: int = 40, size: int = 16):
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n, 1, size, size, generator=g) * 255).to(torch.uint8)
    return images, torch.randint(0, 10, (n,), generator=g)


def _env(num_envs: int, init_location: str = "random") -> GlimpseVectorEnv:
    mdp = MDPConfig(glimpse_size=4, num_glimpses=3, init_location=init_location)
    return GlimpseVectorEnv(_source(), num_envs, mdp, shuffle=False)


def _ram() -> RAM:
    torch.manual_seed(0)
    ram = RAM((1, 1, 4, 4), hidden=16, std=0.3)
    with torch.no_grad():  # a location head that moves: fixations depend on the state
        ram.locator.weight.mul_(20)
    return ram.eval()


def _batched(ram, batch: int, samples: int, sampled: bool, seed: int, n: int = 30):
    """Predictions and fixations of images ``0..n-1`` played ``batch`` images at a time."""
    venv = _env(batch * samples + 1)  # one spare episode: padding must not matter either
    preds, locs = [], []
    for start in range(0, n, batch):
        idx = torch.arange(start, min(start + batch, n))
        p, ro = predict(ram, venv, idx, samples, sampled=sampled, seed=seed)
        preds.append(p)
        k = idx.numel()
        locs.append(ro.locations[:, : k * samples].reshape(-1, samples, k, 2))
    return torch.cat(preds), torch.cat(locs, 2)


@pytest.mark.parametrize(
    ("samples", "sampled"), [(1, False), (1, True), (4, True)], ids=["mean", "sampled", "mc4"]
)
def test_predictions_do_not_depend_on_the_batch_size(samples, sampled):
    ram = _ram()
    p_big, l_big = _batched(ram, 30, samples, sampled, seed=3)
    p_small, l_small = _batched(ram, 7, samples, sampled, seed=3)
    assert torch.equal(p_big, p_small)
    torch.testing.assert_close(l_big, l_small, rtol=0, atol=1e-6)
    # ...and the draws are random: another evaluation seed gives other first fixations.
    _, l_other = _batched(ram, 30, samples, sampled, seed=4)
    assert (l_other[0] - l_big[0]).abs().mean() > 0.2
    if sampled:  # sampled locations after the first differ from the mean-only path
        _, l_mean = _batched(ram, 30, 1, False, seed=3)
        assert (l_big[1:, 0] - l_mean[1:, 0]).abs().mean() > 0.01


def test_evaluate_policy_same_result_for_two_eval_batch_sizes(data_root, monkeypatch):
    """Through the trainer's evaluation on real MNIST: the same metrics and, image by image,
    the same first fixations and predictions (failed before: the first fixations and the
    location noise came from one generator over the whole, padded batch)."""
    import agents.evaluation as train_module
    from agents.config import HardTrainConfig
    from agents.environments import build_envs
    from agents.evaluation import evaluate_policy
    from agents.policies import POLICIES

    seen: dict[int, dict[int, tuple]] = {}

    def recording_predict(policy, venv, idx, samples=1, **kw):
        preds, ro = predict(policy, venv, idx, samples, **kw)
        for j, i in enumerate(idx.tolist()):
            seen[current].setdefault(i, (ro.locations[0, j].tolist(), preds[j].tolist()))
        return preds, ro

    monkeypatch.setattr(train_module, "predict", recording_predict)
    results = {}
    for bs in (250, 96):
        current = bs
        seen[bs] = {}
        cfg = HardTrainConfig(
            init_location="random",
            data_root=str(data_root),
            train_limit=256,
            eval_limit=500,
            val_size=500,
            eval_batch_size=bs,
            mc_samples=2,
            batch_size=64,
            device="cpu",
        ).resolved()
        train_env, evals = build_envs(cfg, torch.device("cpu"))
        torch.manual_seed(0)
        policy = POLICIES["ram"](cfg, train_env.single_observation_space["glimpse"].shape, 1)
        policy.eval()
        results[bs] = {
            p: evaluate_policy(policy, evals["val"], cfg, protocol=p, seed=1)
            for p in ("single-mean", "single-sampled", "mc")
        }
    assert results[250] == results[96]
    assert len(seen[250]) == 500 and seen[250] == seen[96]


def test_episode_draws_are_a_function_of_seed_image_and_sample():
    idx = torch.tensor([5, 9, 5, 5])
    sample = torch.tensor([0, 0, 1, 0])
    init, noise = episode_draws(7, idx, sample, steps=3)
    assert init.shape == (4, 2) and noise.shape == (3, 4, 2)
    assert init.abs().max() <= 1
    assert torch.equal(init[0], init[3]) and torch.equal(noise[:, 0], noise[:, 3])
    assert not torch.equal(init[0], init[1]) and not torch.equal(init[0], init[2])
    other, _ = episode_draws(8, idx, sample, steps=3)
    assert not torch.equal(other[0], init[0])
    i, m = torch.arange(50).repeat(3), torch.arange(3).repeat_interleave(50)
    keys = torch.cat([episode_key(s, i, m) for s in range(3)])
    assert keys.unique().numel() == 3 * 50 * 3 and keys.max() < 2**32 and keys.min() >= 0
    with pytest.raises(ValueError, match="equal-length"):
        episode_draws(0, idx, sample[:2], steps=3)
    with pytest.raises(ValueError, match="seed"):
        episode_draws(-1, idx, sample, steps=3)


def test_episode_draws_have_the_right_distributions():
    n = 20000
    init, noise = episode_draws(0, torch.arange(n), torch.zeros(n, dtype=torch.long), 4)
    assert init.min() >= -1 and init.max() < 1
    torch.testing.assert_close(init.mean(0), torch.zeros(2), atol=0.02, rtol=0)
    torch.testing.assert_close(init.std(0), torch.full((2,), 3**-0.5), atol=0.01, rtol=0)
    flat = noise.reshape(-1, 2)
    torch.testing.assert_close(flat.mean(0), torch.zeros(2), atol=0.02, rtol=0)
    torch.testing.assert_close(flat.std(0), torch.ones(2), atol=0.02, rtol=0)
    assert (flat.abs() > 1.96).float().mean() == pytest.approx(0.05, abs=0.005)
    # coordinates and steps are uncorrelated
    c = torch.corrcoef(torch.stack([flat[:, 0], flat[:, 1], init[:, 0].repeat(4)]))
    assert (c - torch.eye(3)).abs().max() < 0.03


def test_monte_carlo_averages_the_probabilities_of_its_episodes():
    """Values, not shapes: the M episodes of image i are its single-sampled episodes with
    sample indices 0..M-1, and the prediction is the argmax of their mean probabilities."""
    ram = _ram()
    n, m = 20, 5
    venv = _env(n * m)
    idx = torch.arange(n)
    pm, ro = predict(ram, venv, idx, m, seed=2)
    probs = ro.logits[-1].softmax(-1).reshape(m, n, -1)
    assert torch.equal(pm[:, 0], probs.mean(0).argmax(-1))
    single, ro1 = predict(ram, _env(n), idx, 1, sampled=True, seed=2)
    torch.testing.assert_close(ro1.logits[-1], ro.logits[-1, :n])  # sample 0 == single run
    per_sample = probs.argmax(-1)  # (m, n)
    assert torch.equal(per_sample[0], single[:, 0])
    # averaging is not a vote of the first sample: somewhere the samples disagree
    assert (per_sample != per_sample[:1]).any()


def test_predict_rejects_mc_without_sampling():
    with pytest.raises(ValueError, match="sampled=True"):
        predict(_ram(), _env(10), torch.arange(5), 2, sampled=False)
    with pytest.raises(ValueError, match="samples must be >= 1"):
        predict(_ram(), _env(10), torch.arange(5), 0)


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
