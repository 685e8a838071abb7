"""``agents.evaluation``: the evaluation protocols of hard agents."""

from __future__ import annotations

import pytest
import torch

from agents.reinforce import predict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def test_hard_cost_does_not_depend_on_the_batch_size():
    """The inference FLOPs per image are the batch's FLOPs over the episodes it plays:
    counted on a batch of 4 and of 16 they agree (failed before: a batch of 16 playing 16
    episodes was divided by 8 counted images, 2x too many FLOPs per image)."""
    from agents.config import HardTrainConfig
    from agents.evaluation import hard_cost
    from agents.policies import POLICIES
    from envs import GlimpseVectorEnv, ImageSource
    from tests.helpers.reinforce import _toy_source

    images, labels = _toy_source(32, 16)
    cfg = HardTrainConfig(hidden=16, glimpse_size=4, num_glimpses=3, num_scales=2).resolved()
    mdp = cfg.mdp()
    costs = []
    for batch in (4, 16):
        venv = GlimpseVectorEnv(ImageSource(images, labels), batch, mdp, shuffle=False)
        policy = POLICIES["ram"](cfg, venv.single_observation_space["glimpse"].shape, 1)
        costs.append(hard_cost(policy.eval(), venv))
    assert costs[0] == costs[1]
    assert costs[0]["pixels_per_image"] == 3 * 2 * 4 * 4  # T glimpses x k scales x g^2
    assert costs[0]["inference_flops_per_image"] > 0


def test_protocols_report_the_error_after_every_glimpse():
    """``errors_by_glimpses``: from the same episodes as the headline error (its last entry),
    averaged over the evaluation seeds, each entry a value over the whole split."""
    from agents.config import HardTrainConfig
    from agents.evaluation import evaluate_protocols
    from agents.ram import RAM
    from envs import GlimpseVectorEnv, MDPConfig
    from glimpse.evaluation import readout_metrics

    g = torch.Generator().manual_seed(0)
    images = (torch.rand(40, 1, 16, 16, generator=g) * 255).to(torch.uint8)
    labels = torch.randint(0, 3, (40,), generator=g)
    mdp = MDPConfig(glimpse_size=4, num_glimpses=4, num_classes=3, init_location="random")
    envs = {s: GlimpseVectorEnv((images, labels), 40, mdp, shuffle=False) for s in ("val", "test")}
    torch.manual_seed(0)
    ram = RAM((1, 1, 4, 4), num_classes=3, hidden=16)
    cfg = HardTrainConfig(init_location="random", eval_batch_size=40)
    report = evaluate_protocols(ram, envs, cfg, eval_seeds=3)
    for res in report.values():
        curve = res["test_errors_by_glimpses"]
        assert len(curve) == 4 and len(res["val_errors_by_glimpses_std"]) == 4
        assert curve[-1] == pytest.approx(res["test_error"])
        per_seed = []
        for s in res["eval_seeds"]:
            preds, _ = predict(
                ram,
                envs["test"],
                torch.arange(40),
                seed=s,
                by_step=True,
                sampled=res is report["single-sampled"],
            )
            per_seed.append(readout_metrics(preds, labels)["errors_by_step"])
        want = torch.tensor(per_seed, dtype=torch.float64).mean(0)
        torch.testing.assert_close(torch.tensor(curve, dtype=torch.float64), want)
    with pytest.raises(ValueError, match=r"readouts must be \(N, T\)"):
        readout_metrics(torch.zeros(3, dtype=torch.long), labels[:3])
