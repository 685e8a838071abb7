"""Training the FCAN-style part-localization agent (:mod:`agents.parts`; Liu et al. 2016):
the library side of ``scripts/train_parts.py``.

Datasets: ``proxy`` (:class:`glimpse.data.TwoDigitMNIST`, ``twodigit100``: two digits on a
cluttered 100x100 canvas, 100 classes, the task ``Glimpse/TwoDigitParts-v0``) and ``cub``
(CUB-200-2011 through :class:`glimpse.data.CUB200`, resized to ``image_size`` squared and
held in memory; a validation split is drawn from the official training split).

Run folder ``runs/<run_name>/``: ``config.json``, TensorBoard events, ``last.pt`` and
``best.pt`` (atomic; ``--resume`` continues from ``last.pt``), ``metrics.json`` (final test
metrics, including the part-hit rates of :mod:`glimpse.parts_metrics`).

TensorBoard tags; the global step is the number of training episodes (images) seen:

- ``losses/{total,classification,whole,parts,policy,entropy}``,
  ``train/{accuracy,reward,greedy_reward}``, ``charts/{entropy_max,lr,images_per_s}``
  every ``log_every`` batches;
- ``eval/{accuracy,error,part_hit,part_hit/<k>}`` (validation split) after every epoch,
  plus ``eval/digits_covered`` on the proxy;
- ``eval/parts/video`` and ``eval/parts/steps/<global step>``: the chosen parts of the
  first ``playback`` validation images, one part per frame
  (:func:`glimpse.viz.log_trajectories`);
- ``hparams``: the config as a text table.

Data-parallel (``torchrun``, :mod:`glimpse.distributed`), as :mod:`agents.train`:
``batch_size`` episodes per rank and step, so the global batch (and the global step's
increment) is ``batch_size x world_size``; each rank plays its own shard of the training
images with its own part sampling, the REINFORCE baseline (the batch mean of the greedy
reward per step and part) is averaged over ranks and the gradients too (one all-reduce,
before clipping), so an update equals that of the global batch; BatchNorm statistics are
per rank, rank 0's are copied to every rank before each evaluation; logged training
scalars are rank means (``charts/entropy_max`` the maximum); evaluation is sharded with
exact accuracy and part-hit rates; rank 0 alone writes the run folder; ``--resume``
restores every rank (same number of processes). Launch::

    torchrun --standalone --nproc_per_node 2 scripts/train_parts.py --threads 1
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from agents.parts import PartsNet, collect_parts_rollout, parts_loss, predict_parts
from agents.playback import log_parts_playback
from agents.reinforce import ReinforceConfig
from envs import GlimpseVectorEnv, ImageSource, MDPConfig
from glimpse import distributed
from glimpse.evaluation import evaluate, evaluate_sharded
from glimpse.loop import Budget, Method, Report, Update, apply_gradients, fit
from glimpse.parts_metrics import digit_hits, digits_covered, hit_summary, part_hits
from glimpse.tasks import task_for_env_id
from glimpse.training import (
    Rule,
    Run,
    RunConfig,
    batches_per_epoch,
    check_config,
    progress,
)

__all__ = [
    "PartsTrainConfig",
    "build_parts_envs",
    "build_parts_net",
    "evaluate_parts",
    "load_cub",
    "train_parts",
]

PROXY_TASK = "Glimpse/TwoDigitParts-v0"
_PROXY = task_for_env_id(PROXY_TASK)

_DEFAULTS: dict[str, dict[str, Any]] = {
    "proxy": {
        "glimpse_size": _PROXY.glimpse_size,
        "context_size": _PROXY.context_size,
        "num_scales": _PROXY.num_scales,
        "backbone": "small",
    },
    "cub": {"glimpse_size": 224, "num_scales": 1, "context_size": 224, "backbone": "resnet50"},
}


@dataclass
class PartsTrainConfig(RunConfig):
    """Training the FCAN part-localization agent (Liu et al. 2016) with REINFORCE and a
    greedy reward."""

    dataset: Literal["proxy", "cub"] = "proxy"
    """proxy: two cluttered digits on 100x100, 100 classes (MNIST under data_root);
    cub: CUB-200-2011 (data_root holds CUB_200_2011/)."""
    num_parts: int = 2
    """K: parts chosen at once at each step."""
    steps: int = 1
    """Part-selection steps S (the env's num_glimpses is S + 1)."""
    glimpse_size: int | None = None
    """Side g of each part crop in image pixels (default: 28 proxy, 224 cub)."""
    num_scales: int | None = None
    """Scales per part crop (default: 2 proxy, 1 cub)."""
    scale_factor: float = 2.0
    """Each scale covers this many times the previous one's side."""
    context_size: int | None = None
    """Side of the low-resolution whole-image view the attention reads (default: 25
    proxy, 224 cub)."""
    image_size: int = 448
    """cub: images are resized to image_size x image_size (the crops' resolution)."""
    cub_val_fraction: float = 0.1
    """cub: fraction of the official training split held out for validation."""
    backbone: Literal["small", "resnet18", "resnet50"] | None = None
    """Feature and part networks (default: small proxy, resnet50 cub)."""
    pretrained: bool = False
    """ImageNet weights for the ResNet backbones (downloaded by torchvision; needs internet)."""
    reward: Literal["delta", "indicator"] = "delta"
    """Greedy reward: the gain in the true class's confidence a part brings (delta), or 1
    when the part makes the prediction right and raises that confidence (indicator)."""
    reward_scope: Literal["part", "step"] = "part"
    """part: each part is paid its own confidence gain; step: every part of a step is paid
    the gain of all the step's parts together (rewards complementary parts)."""
    lr: float = 2e-3
    """Adam learning rate."""
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    """Learning-rate schedule over all training batches."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    epochs: int = 10
    """Passes over the training split."""
    batch_size: int = 64
    """Episodes per gradient step and process (the vector env's num_envs); under torchrun
    the global batch is this times the number of processes."""
    policy_coef: float = 1.0
    """Weight of the REINFORCE term."""
    entropy_coef: float = 0.0
    """Weight of the attention-entropy bonus."""
    grad_clip: float = 10.0
    """Clip the global gradient norm to this (0 disables)."""
    hit_radius: float = 0.25
    """cub: a part hits within hit_radius * (longer box side) of a visible annotated part."""
    playback: int = 8
    """Validation images whose chosen parts are logged at each evaluation."""
    train_limit: int = 0
    """Train on only the first this many images of the training split (0: all of it)."""
    eval_limit: int = 0
    """Evaluate on only the first this many images of val and test (0: all; smoke runs)."""

    RULES: ClassVar[dict[str, Rule]] = {
        "num_parts": (">=", 1),
        "steps": (">=", 1),
        "glimpse_size": (">=", 1),
        "num_scales": (">=", 1),
        "scale_factor": (">=", 1),
        "context_size": (">=", 1),
        "image_size": (">=", 1),
        "cub_val_fraction": ("()", 0, 1),
        "lr": (">=", 0),
        "weight_decay": (">=", 0),
        "epochs": (">=", 1),
        "batch_size": (">=", 1),
        "policy_coef": (">=", 0),
        "entropy_coef": (">=", 0),
        "grad_clip": (">=", 0),
        "hit_radius": (">", 0),
        "playback": (">=", 0),
        "train_limit": (">=", 0),
        "eval_limit": (">=", 0),
    }
    RESUMABLE: ClassVar[tuple[str, ...]] = ("epochs", "patience")
    """``--resume --epochs N`` with more epochs extends the run (and its cosine)."""

    def resolved(self) -> PartsTrainConfig:
        """A checked copy with the dataset's defaults filled in and the run name chosen."""
        check_config(self)
        d = _DEFAULTS[self.dataset]
        unset = lambda v, dflt: dflt if v is None else v  # noqa: E731 -- 0 is not "unset"
        out = replace(
            self,
            glimpse_size=unset(self.glimpse_size, d["glimpse_size"]),
            context_size=unset(self.context_size, d["context_size"]),
            num_scales=unset(self.num_scales, d["num_scales"]),
            backbone=self.backbone or d["backbone"],
            run_name=self.run_name or f"parts-{self.dataset}-s{self.seed}-{int(time.time())}",
        )
        if not 0 < out.cub_val_fraction < 1:
            raise ValueError(f"cub_val_fraction must be in (0, 1), got {out.cub_val_fraction}")
        return out

    def mdp(self, num_classes: int) -> MDPConfig:
        """The env's MDP parameters for this run (parts mode)."""
        return MDPConfig(
            glimpse_size=self.glimpse_size,
            num_scales=self.num_scales,
            scale_factor=self.scale_factor,
            num_glimpses=self.steps + 1,
            num_classes=num_classes,
            num_parts=self.num_parts,
            context_size=self.context_size,
        )


# ------------------------------------------------------------------------------- data
def load_cub(
    root: str | None, train: bool, image_size: int, device: torch.device | str = "cpu"
) -> tuple[ImageSource, Tensor]:
    """CUB-200-2011 split resized to ``image_size`` squared, held as one uint8 tensor:
    ``(ImageSource(images (N, 3, S, S), labels, boxes (N, 4)), parts (N, 15, 3))``, boxes
    and parts in the resized image's pixels."""
    from glimpse.data import CUB200
    from glimpse.data.transforms import Compose, Resize, ToTensor

    ds = CUB200(
        root,
        train=train,
        target_type=("label", "box", "parts"),
        transform=Compose([Resize((image_size, image_size)), ToTensor()]),
    )
    images = torch.empty(len(ds), 3, image_size, image_size, dtype=torch.uint8)
    boxes, parts = torch.empty(len(ds), 4), torch.empty(len(ds), ds.parts.shape[1], 3)
    for i in progress(range(len(ds)), total=len(ds), desc="loading CUB", leave=False):
        image, (_, box, part) = ds[i]
        images[i] = (image * 255).round().to(torch.uint8)
        boxes[i], parts[i] = box, part
    return ImageSource(images, ds.targets.clone(), boxes).to(device), parts.to(device)


def _subset(src: ImageSource, idx: Tensor) -> ImageSource:
    boxes = None if src.boxes is None else src.boxes[idx]
    return ImageSource(src.images[idx], src.labels[idx], boxes)


def _sources(
    cfg: PartsTrainConfig, device: torch.device
) -> tuple[dict[str, ImageSource], dict[str, Tensor | None], int]:
    """Train/val/test sources, CUB part annotations per split (``None`` for the proxy),
    and the number of classes."""
    if cfg.dataset == "proxy":
        kw: dict[str, Any] = {"val_size": cfg.val_size}
        if cfg.download:
            kw["download"] = True
        limit = {"train": cfg.train_limit, "val": cfg.eval_limit, "test": cfg.eval_limit}
        sources = {
            s: ImageSource.from_any(
                _PROXY.dataset, s, cfg.data_root, device, {**kw, "limit": limit[s] or None}
            )
            for s in ("train", "val", "test")
        }
        parts: dict[str, Tensor | None] = dict.fromkeys(sources)
        num_classes = _PROXY.num_classes
    else:
        train, train_parts = load_cub(cfg.data_root, True, cfg.image_size, device)
        test, test_parts = load_cub(cfg.data_root, False, cfg.image_size, device)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
        n_val = max(1, round(cfg.cub_val_fraction * len(train)))
        val_idx, train_idx = order[:n_val].to(device), order[n_val:].to(device)
        sources = {
            "train": _subset(train, train_idx),
            "val": _subset(train, val_idx),
            "test": test,
        }
        parts = {"train": train_parts[train_idx], "val": train_parts[val_idx], "test": test_parts}
        num_classes = int(max(train.labels.max(), test.labels.max())) + 1
        num_classes = max(num_classes, 2)
    limits = {"train": cfg.train_limit, "val": cfg.eval_limit, "test": cfg.eval_limit}
    for split, n in limits.items():
        if n and n < len(sources[split]):
            idx = torch.arange(n, device=device)
            sources[split] = _subset(sources[split], idx)
            if parts[split] is not None:
                parts[split] = parts[split][idx]
    return sources, parts, num_classes


def build_parts_envs(
    cfg: PartsTrainConfig, device: torch.device
) -> tuple[GlimpseVectorEnv, dict[str, GlimpseVectorEnv], dict[str, Tensor | None]]:
    """The training env (shuffled), ordered evaluation envs (val, test) and the CUB part
    annotations of each split."""
    sources, parts, num_classes = _sources(cfg, device)
    mdp = cfg.mdp(num_classes)
    train_env = GlimpseVectorEnv(sources["train"], cfg.batch_size, mdp, device=device)
    evals = {
        s: GlimpseVectorEnv(
            sources[s], min(cfg.eval_batch_size, len(sources[s])), mdp, device=device, shuffle=False
        )
        for s in ("val", "test")
    }
    return train_env, evals, parts


def build_parts_net(cfg: PartsTrainConfig, venv: GlimpseVectorEnv) -> PartsNet:
    """The parts agent sized from the config and ``venv``'s views and classes."""
    space = venv.single_observation_space
    return PartsNet(
        space["context"].shape,
        space["glimpse"].shape,
        venv.config.num_classes,
        steps=cfg.steps,
        backbone=cfg.backbone,
        pretrained=cfg.pretrained,
    )


# ------------------------------------------------------------------------- evaluation
def evaluate_parts(
    net: PartsNet,
    venv: GlimpseVectorEnv,
    cfg: PartsTrainConfig,
    parts: Tensor | None = None,
    desc: str = "eval",
) -> tuple[dict[str, float], Tensor]:
    """Accuracy (shared :func:`glimpse.evaluation.evaluate`) and part-hit rates of ``net``
    on every image of ``venv``'s split; also returns the chosen locations ``(N, S*K, 2)``.

    Part hits: CUB (``parts`` given) by :func:`glimpse.parts_metrics.part_hits` with
    ``cfg.hit_radius``; the proxy by :func:`glimpse.parts_metrics.digit_hits` (plus
    ``digits_covered``: both digits hold a chosen part).

    Under ``torchrun`` every rank must call it: each plays its slice of the split
    (:func:`glimpse.evaluation.evaluate_sharded`), the predictions and chosen locations
    are gathered, so every rank gets the metrics of a single-process evaluation."""
    chosen: list[Tensor] = []

    def run(idx: Tensor) -> Tensor:
        preds, ro = predict_parts(net, venv, idx)
        locs = ro.locations[:, : idx.numel()]  # (S, n, K, 2)
        chosen.append(locs.permute(1, 0, 2, 3).reshape(idx.numel(), -1, 2).cpu())
        return preds

    metrics = evaluate_sharded(run, venv.source.labels, venv.num_envs, desc, evaluate)
    per_image = venv.config.num_parts * (venv.config.num_glimpses - 1)  # S * K parts
    mine = torch.cat(chosen) if chosen else torch.zeros(0, per_image, 2)
    locations = distributed.all_gather_cat(mine)  # rank order = the split's order
    image_hw = tuple(venv.source.image_shape[1:])
    boxes = venv.source.boxes
    if parts is not None and boxes is not None:
        hits = part_hits(locations, parts.cpu(), boxes.cpu(), image_hw, cfg.hit_radius)
        metrics.update(hit_summary(hits))
    elif boxes is not None and boxes.ndim == 3:
        metrics.update(hit_summary(digit_hits(locations, boxes.cpu(), image_hw)))
        covered = digits_covered(locations, boxes.cpu(), image_hw)
        metrics["digits_covered"] = covered.float().mean().item()
    return metrics, locations


# --------------------------------------------------------------------------- training
class PartsMethod(Method):
    """The FCAN-style parts agent (Liu et al. 2016) for :func:`glimpse.loop.fit`:
    classification by backpropagation, part choices by REINFORCE (:func:`parts_loss`)."""

    name = "parts"

    def __init__(self, cfg: PartsTrainConfig, device: torch.device, run: Run) -> None:
        self.cfg = cfg
        world = distributed.world_size()
        with distributed.local_main_first():  # one process per node generates the datasets
            self.train_env, self.evals, self.parts = build_parts_envs(cfg, device)
        if world > 1:
            self.train_env.stream.shard(distributed.rank(), world)
        self.train_env.reset(seed=cfg.seed)
        self.model = self.net = build_parts_net(cfg, self.train_env).to(device)
        self.optimizer = torch.optim.Adam(
            self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.stream = self.train_env.stream
        per_epoch = batches_per_epoch(
            self.stream.shard_size, cfg.batch_size, cfg.max_batches_per_epoch
        )
        mdp = self.train_env.config
        self.budget = Budget(
            total_updates=cfg.epochs * per_epoch,
            eval_every=per_epoch,
            images_per_update=cfg.batch_size * world,
            env_steps_per_update=cfg.batch_size * world * mdp.num_glimpses,
        )
        self.task = "cub" if cfg.dataset == "cub" else "twodigit100"
        self.rcfg = ReinforceConfig(policy_coef=cfg.policy_coef, entropy_coef=cfg.entropy_coef)
        self.world = world

    def update(self) -> Update:
        ro = collect_parts_rollout(self.net, self.train_env)
        loss, metrics = parts_loss(
            ro, self.rcfg, self.cfg.reward, self.cfg.reward_scope, sync_baseline=self.world > 1
        )
        apply_gradients(loss, self.net, self.optimizer, self.cfg.grad_clip)
        return Update(metrics, indices=ro.indices)

    def train_scalars(self, last: Update) -> dict[str, float]:
        return _reduced(last.metrics)

    def validate(self) -> dict[str, float]:
        val, _ = evaluate_parts(self.net, self.evals["val"], self.cfg, self.parts["val"], "val")
        return val

    def log_images(self, run: Run, step: int) -> None:
        log_parts_playback(run, self.net, self.evals["val"], self.cfg.playback, step)

    def report(self) -> Report:
        test, _ = evaluate_parts(self.net, self.evals["test"], self.cfg, self.parts["test"], "test")
        details = {f"test_{k}": v for k, v in test.items() if k.startswith(("part_hit", "digits"))}
        return Report(
            test_error=test["error"],
            protocol="deterministic",
            protocols={"deterministic": {"test_error": test["error"]}},
            selection="best.pt: highest validation accuracy after an epoch (greedy parts)",
            details=details,
        )

    def cost(self) -> dict[str, Any]:
        return {
            "inference_flops_per_image": None,
            "pixels_per_image": None,
            "params": sum(p.numel() for p in self.net.parameters()),
        }


def train_parts(cfg: PartsTrainConfig) -> dict[str, Any]:
    """Train the parts agent through :func:`glimpse.loop.fit`; return the ``metrics.json``
    record (test metrics of the best-on-validation weights)."""
    return fit(PartsMethod, cfg.resolved())


def _reduced(metrics: dict[str, float]) -> dict[str, float]:
    """Training scalars over ranks: means, and the maximum of ``charts/entropy_max``."""
    out = distributed.mean_metrics(metrics)
    if "charts/entropy_max" in metrics and distributed.world_size() > 1:
        top = distributed.all_gather_cat(torch.tensor([metrics["charts/entropy_max"]]))
        out["charts/entropy_max"] = float(top.max())
    return out
