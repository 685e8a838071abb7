"""Does one glimpse show where the object is? A supervised location probe.

RAM's location policy (Mnih et al. 2014, arXiv:1406.6247) must steer from what its
glimpses show, and it learns to do so from a sparse REINFORCE reward. This probe asks the
same question without reinforcement learning: from the **first glimpse** of every image
(at the centre, or at a uniformly random location as RAM's default first fixation, the
location then given to the probe too, as RAM's glimpse network gets it), a small MLP
regresses the centre of the digit's frame, trained by backpropagation on the training
split and scored on the test split. If the probe finds the digit, the information to
steer by is in the glimpse and a policy that does not find it is limited by its learning,
not by its sensor; if it does not, the glimpse is too coarse to steer by.

Scores (:func:`probe_first_glimpse`), each for every single scale and for all scales:

- ``in_box``: the fraction of predicted centres inside the digit's frame (what a fixation
  there would score in ``attention_in_box``, :func:`glimpse.attention.fixations_in_boxes`);
- ``error_px``: the mean distance in pixels from the predicted to the true centre.

Baselines scored the same way: the first fixation itself (staying where the first
glimpse was), the training split's mean centre, and ``chance_in_box`` (the mean share of
the image inside the frame: a uniformly random fixation). Entry point:
``scripts/probe_location.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from glimpse.attention import fixations_in_boxes
from glimpse.data import ImageSource
from glimpse.io import write_json
from glimpse.retina import Retina, loc_to_pixel, pixel_to_loc
from glimpse.tasks import TASKS, get_task
from glimpse.training import Rule, check_config, progress, resolve_device

__all__ = ["ProbeConfig", "probe_first_glimpse", "run_probe"]


@dataclass
class ProbeConfig:
    """The location probe of a task's first glimpse (module docstring)."""

    task: str = "cluttered100"
    """A task whose dataset records the digit's frame (translated60, cluttered60, ...)."""
    data_root: str | None = None
    """Folder holding MNIST/raw (default: $GLIMPSE_DATA, else ./data)."""
    train_images: int = 20000
    """Training images the probe is fitted on (the first this many of the split)."""
    test_images: int = 5000
    """Test images it is scored on (the first this many of the split)."""
    first_fixation: Literal["centre", "random"] = "centre"
    """Where the first glimpse is taken: the centre, or uniformly at random in the image
    (drawn from a generator seeded by ``seed``; RAM's default ``--init-location random``),
    its location then also an input of the probe."""
    epochs: int = 30
    """Passes of Adam over the training images."""
    batch_size: int = 256
    """Images per gradient step."""
    hidden: int = 256
    """Width of the probe's two hidden layers."""
    lr: float = 1e-3
    """Adam learning rate."""
    seed: int = 0
    """Seed of the probe's weights and data order."""
    device: str = "cpu"
    """'cpu', 'cuda[:N]' or 'auto'."""
    threads: int = 1
    """PyTorch CPU threads (0: PyTorch's default)."""
    out: str | None = None
    """Write the result as JSON here (default: print only)."""

    RULES: ClassVar[dict[str, Rule]] = {
        "train_images": (">=", 1),
        "test_images": (">=", 1),
        "epochs": (">=", 1),
        "batch_size": (">=", 1),
        "hidden": (">=", 1),
        "lr": (">", 0),
        "seed": (">=", 0),
        "threads": (">=", 0),
    }


def _centre_locs(boxes: Tensor, height: int, width: int) -> Tensor:
    """``(N, 4)`` pixel boxes ``(x0, y0, x1, y1)`` -> their centres as locations ``(N, 2)``."""
    centre = torch.stack(((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2), 1)
    return pixel_to_loc(centre, height, width)


def _scores(locs: Tensor, target: Tensor, boxes: Tensor, height: int, width: int) -> dict:
    """``in_box`` and ``error_px`` of predicted locations ``(N, 2)`` against the targets."""
    locs = locs.clamp(-1.0, 1.0)
    hit = fixations_in_boxes(locs[:, None], boxes, height, width)[:, 0]
    dist = (loc_to_pixel(locs, height, width) - loc_to_pixel(target, height, width)).norm(dim=1)
    return {"in_box": hit.float().mean().item(), "error_px": dist.mean().item()}


def _fit(x: Tensor, y: Tensor, cfg: ProbeConfig, desc: str) -> nn.Module:
    """An MLP ``x -> y`` fitted by Adam on the mean squared error."""
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = nn.Sequential(
            nn.Linear(x.shape[1], cfg.hidden),
            nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(),
            nn.Linear(cfg.hidden, y.shape[1]),
        ).to(x.device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    n = x.shape[0]
    for _ in progress(range(cfg.epochs), desc=desc):
        order = torch.randperm(n, generator=gen).to(x.device)
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            loss = nn.functional.mse_loss(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


def probe_first_glimpse(
    train: ImageSource, test: ImageSource, retina: Retina, cfg: ProbeConfig
) -> dict[str, Any]:
    """The probe on two image sources that record one box per image.

    The glimpse of every image at its first fixation (``cfg.first_fixation``: the centre,
    or uniform draws in image order from a generator seeded by ``cfg.seed`` and the split,
    the location then also an input) is
    the input; the box centre (as a location) the target. Returns ``{"probes": {name:
    scores}}`` for every single scale (``"scale 1"`` the finest) and ``"all scales"``, the
    baselines ``"first fixation"`` and ``"training mean"`` scored the same way,
    ``chance_in_box``, and the test images' count.
    """
    for name, src in (("train", train), ("test", test)):
        if src.boxes is None or src.boxes.ndim != 2:
            raise ValueError(f"the {name} images must record one (N, 4) box per image")
    h, w = train.images.shape[-2:]
    if tuple(test.images.shape[-2:]) != (h, w):
        raise ValueError(f"train images are {h}x{w}, test {tuple(test.images.shape[-2:])}")
    random = cfg.first_fixation == "random"

    def first_glimpses(src: ImageSource, split_seed: int) -> tuple[Tensor, Tensor]:
        gen = torch.Generator().manual_seed(cfg.seed * 2 + split_seed)
        n = len(src)
        if random:
            locs = torch.rand(n, 2, generator=gen) * 2 - 1
        else:
            locs = torch.zeros(n, 2)
        locs = locs.to(src.images.device)
        chunks = []
        for start in range(0, n, 1000):
            images, _ = src.get(slice(start, start + 1000))
            chunks.append(retina(images, locs[start : start + 1000]))
        return torch.cat(chunks), locs  # (N, k, C, g, g), (N, 2)

    (g_train, l_train), (g_test, l_test) = first_glimpses(train, 0), first_glimpses(test, 1)
    y_train = _centre_locs(train.boxes.to(g_train.device), h, w)
    y_test = _centre_locs(test.boxes.to(g_test.device), h, w)
    boxes = test.boxes.to(g_test.device)

    def inputs(glimpses: Tensor, locs: Tensor, scales: list[int]) -> Tensor:
        x = glimpses[:, scales].flatten(1)
        return torch.cat((x, locs), 1) if random else x

    k = retina.num_scales
    subsets = {f"scale {i + 1}": [i] for i in range(k)} if k > 1 else {}
    subsets["all scales"] = list(range(k))
    probes = {}
    for name, scales in subsets.items():
        net = _fit(inputs(g_train, l_train, scales), y_train, cfg, f"probe {name}")
        with torch.no_grad():
            pred = net(inputs(g_test, l_test, scales))
        probes[name] = _scores(pred, y_test, boxes, h, w)
    n = y_test.shape[0]
    baselines = {
        "first fixation": _scores(l_test, y_test, boxes, h, w),
        "training mean": _scores(y_train.mean(0).expand(n, 2), y_test, boxes, h, w),
    }
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp_min(0)
    return {
        "probes": probes,
        "baselines": baselines,
        "chance_in_box": (area / (h * w)).mean().item(),
        "test_images": n,
    }


def run_probe(cfg: ProbeConfig) -> dict[str, Any]:
    """The probe of ``cfg.task``'s first glimpse (the task's glimpse size and scales, at
    ``cfg.first_fixation``), on its first ``train_images`` / ``test_images``; written to
    ``cfg.out``."""
    check_config(cfg)
    if cfg.task not in TASKS:
        raise ValueError(f"--task must be one of {', '.join(TASKS)}, got {cfg.task!r}")
    task = get_task(cfg.task)
    if task.num_targets != 1 or task.kind != "paper":
        raise ValueError(f"--task must be a single-digit task with boxes, got {cfg.task!r}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    sources = []
    for split, limit in (("train", cfg.train_images), ("test", cfg.test_images)):
        kwargs = {"limit": limit} if task.generated else {}
        src = ImageSource.from_any(task.dataset, split, cfg.data_root, device, kwargs)
        if src.boxes is None:
            raise ValueError(f"--task {cfg.task}: its dataset records no digit boxes")
        boxes = src.boxes[:limit]
        sources.append(ImageSource(src.images[:limit], src.labels[:limit], boxes))
    retina = Retina(task.glimpse_size, task.num_scales)
    result = probe_first_glimpse(*sources, retina, cfg)
    result = {
        "task": cfg.task,
        "glimpse": f"{task.glimpse_size}x{task.glimpse_size}, {task.num_scales} scales",
        "first_fixation": cfg.first_fixation,
        "train_images": len(sources[0]),
        **result,
        "config": {k: v for k, v in vars(cfg).items() if k not in ("out", "data_root")},
    }
    if cfg.out:
        write_json(cfg.out, result)
    return result
