"""DRAM (Ba et al. 2015): shapes, the context network, multi-object rollouts and training."""

from __future__ import annotations

import pytest
import torch

from agents.dram import DRAM
from agents.reinforce import collect_rollout, reinforce_loss
from envs import GlimpseVectorEnv, MDPConfig


def _two_digit_source(n: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 1, 24, 40, generator=g) * 255).to(torch.uint8)
    return images, torch.randint(0, 10, (n, 2), generator=g)


def test_dram_needs_and_uses_the_context_view():
    dram = DRAM((2, 1, 6, 6), (1, 10, 10), hidden=16)
    obs = {"glimpse": torch.rand(3, 2, 1, 6, 6), "location": torch.zeros(3, 2)}
    with pytest.raises(ValueError, match="context"):
        dram.initial_state(obs)
    obs["context"] = torch.rand(3, 1, 10, 10)
    state = dram.initial_state(obs)
    assert state.shape == (3, 64)
    h1, c1, h2, c2 = state.split(16, 1)
    assert h1.abs().sum() == 0 and c1.abs().sum() == 0 and c2.abs().sum() == 0
    assert h2.abs().sum() > 0  # the context network initialises the upper LSTM
    other = dict(obs, context=torch.rand(3, 1, 10, 10))
    first = dram.act(obs, state, deterministic=True).mean
    assert not torch.allclose(first, dram.act(other, dram.initial_state(other), True).mean)


def test_dram_rollout_classifies_each_object_in_turn():
    cfg = MDPConfig(glimpse_size=6, num_scales=2, num_glimpses=3, num_targets=2, context_size=8)
    venv = GlimpseVectorEnv(_two_digit_source(), 8, cfg, shuffle=False)
    dram = DRAM((2, 1, 6, 6), (1, 8, 8), hidden=16)
    ro = collect_rollout(dram, venv)
    assert ro.logits.shape == (2, 8, 10) and ro.log_probs.shape == (6, 8)
    # Rewards only at the classifying steps 2 and 5, each for its own digit.
    assert ro.rewards[[0, 1, 3, 4]].abs().sum() == 0
    preds = ro.predictions
    torch.testing.assert_close(ro.rewards[2], (preds[:, 0] == ro.labels[:, 0]).float())
    torch.testing.assert_close(ro.rewards[5], (preds[:, 1] == ro.labels[:, 1]).float())
    loss, metrics = reinforce_loss(ro)
    loss.backward()
    assert dram.context[0].weight.grad.abs().sum() > 0
    assert dram.classifier.weight.grad.abs().sum() > 0
    assert metrics["train/accuracy"] == (preds == ro.labels).all(1).float().mean().item()


@pytest.mark.parametrize("detach_location", [True, False])
def test_each_loss_term_trains_its_own_networks(detach_location):
    """REINFORCE trains the location pathway (context network, upper LSTM, emission), and
    with ``detach_location`` nothing else; classification trains the glimpse network, the
    lower LSTM and the classifier; the baseline term only the baseline."""
    from tests.helpers.reinforce import _term_grads, _trained

    cfg = MDPConfig(glimpse_size=6, num_scales=2, num_glimpses=3, num_targets=2, context_size=8)
    venv = GlimpseVectorEnv(_two_digit_source(), 8, cfg, shuffle=False)
    dram = DRAM((2, 1, 6, 6), (1, 8, 8), hidden=16, std=0.2, detach_location=detach_location)
    location_path = {"context", "rnn2", "emission"}
    policy = _trained(_term_grads(dram, venv, "policy"))
    assert policy == (
        location_path if detach_location else location_path | {"what", "where", "rnn1"}
    )
    assert _trained(_term_grads(dram, venv, "baseline")) == {"baseline"}
    assert _trained(_term_grads(dram, venv, "classification")) == {
        "what",
        "where",
        "rnn1",
        "classifier",
    }
