"""``agents.reinforce``: which loss term trains which parameters (on a real rollout), and
the single-trajectory evaluation protocol of hard agents (issue 16).

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
from tests.helpers.reinforce import _term_grads, _toy_source, _trained

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


def test_episode_keys_and_first_fixations_keep_their_recorded_values():
    """The keys and first fixations are part of every seeded run (training's first
    fixations, every evaluation): these were recorded from the int64 torch implementation
    before the hashes moved to numpy uint64 (issue 20), including indices >= 2**32."""
    idx = torch.tensor([0, 1, 59999, 2**32 - 1, 2**32, 2**40 + 5])
    sample = torch.tensor([2732, 43567, 18033, 45493, 65046, 987])
    keys = episode_key(7, idx, sample)
    assert keys.dtype == torch.long
    assert keys.tolist() == [2640369881, 2169463848, 3889215349, 3629910172, 874337361, 2035996567]
    init, _ = episode_draws(7, idx, sample, steps=0)
    want = [
        [-0.7468768358230591, 0.6767404079437256],
        [-0.12453770637512207, 0.801984429359436],
        [-0.9019595384597778, 0.27369773387908936],
        [0.546630859375, 0.5817173719406128],
        [-0.28075742721557617, -0.1457514762878418],
        [0.24814188480377197, 0.8888841867446899],
    ]
    assert init.dtype == torch.float32 and init.tolist() == want


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


# ------------------------------------------------- which loss term trains which weights
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


def test_classification_loss_is_the_hybrid_loss_cross_entropy_alone():
    from agents.reinforce import Rollout, classification_loss, reinforce_loss

    logp = torch.tensor([[-1.0, -2.0], [-0.5, -1.5], [-3.0, -3.0]], requires_grad=True)
    values = torch.tensor([[0.2, 0.6], [0.4, 0.5], [0.9, 0.1]], requires_grad=True)
    rewards = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]], requires_grad=True)
    labels = torch.tensor([[0], [0]])
    ro = Rollout(logp, torch.zeros(3, 2), values, rewards, logits, labels, torch.zeros(4, 2, 2))
    loss, m = classification_loss(ro)
    _, hybrid = reinforce_loss(ro)
    assert loss.item() == m["losses/total"] == pytest.approx(hybrid["losses/classification"])
    for key in ("losses/classification", "train/accuracy", "train/reward"):
        assert m[key] == hybrid[key]
    loss.backward()
    assert logp.grad is None and values.grad is None and logits.grad.abs().sum() > 0


# ----------------------------------------------- readouts after every glimpse (issue 17)
@pytest.mark.parametrize(("samples", "sampled"), [(1, False), (1, True), (3, True)])
def test_by_step_readouts_end_with_the_prediction_and_read_each_step(samples, sampled):
    ram, n = _ram(), 12
    venv = _env(n * samples)
    idx = torch.arange(n)
    final, _ = predict(ram, venv, idx, samples, sampled=sampled, seed=1)
    steps, ro = predict(ram, venv, idx, samples, sampled=sampled, seed=1, by_step=True)
    assert steps.shape == (n, 3)  # T = 3 readouts
    assert torch.equal(steps[:, -1], final[:, 0])  # the last readout is the prediction
    probs = ro.step_logits.softmax(-1).reshape(3, samples, n, -1).mean(1)  # (T, n, C)
    assert torch.equal(steps, probs.argmax(-1).T)
    assert (steps[:, 0] != steps[:, -1]).any()  # the early readouts are other numbers


def test_by_step_refuses_several_targets():
    mdp = MDPConfig(glimpse_size=4, num_glimpses=2, num_targets=2)
    images, labels = _source()
    venv = GlimpseVectorEnv((images, torch.stack([labels, labels], 1)), 4, mdp, shuffle=False)
    with pytest.raises(ValueError, match="one target per episode"):
        predict(_ram(), venv, torch.arange(4), by_step=True)


def test_per_step_loss_is_the_mean_cross_entropy_of_every_readout():
    from agents.reinforce import ReinforceConfig, Rollout, classification_loss, reinforce_loss

    g = torch.Generator().manual_seed(0)
    steps, b, c = 4, 3, 5
    step_logits = torch.randn(steps, b, c, generator=g, requires_grad=True)
    labels = torch.tensor([[0, 1], [2, 3], [4, 0]])  # two targets, two steps each
    ro = Rollout(
        torch.zeros(steps, b),
        torch.zeros(steps, b),
        torch.zeros(steps, b),
        torch.zeros(steps, b),
        step_logits[[1, 3]],
        labels,
        torch.zeros(steps + 1, b, 2),
        step_logits,
    )
    want = (
        sum(
            torch.nn.functional.cross_entropy(step_logits[t], labels[:, t // 2])
            for t in range(steps)
        )
        / steps
    )
    per_step, _ = classification_loss(ro, per_step=True)
    torch.testing.assert_close(per_step, want)
    last, _ = classification_loss(ro)
    assert not torch.isclose(last, per_step)
    _, hybrid = reinforce_loss(ro, ReinforceConfig(per_step_loss=True))
    assert hybrid["losses/classification"] == pytest.approx(want.item())
    per_step.backward()
    assert (step_logits.grad[0].abs().sum(-1) > 0).all()  # the early readouts are trained
