"""Supervised training of soft-attention models: the library side of ``scripts/train_soft.py``.

The model is a :class:`~soft_baselines.backbones.SmallCNN` with one registered attention
block inserted after the chosen stages, a spatial transformer front end (``"stn"``,
Jaderberg et al. 2015), or nothing (``"none"``, the plain backbone). It is trained with
cross-entropy on the same splits the hard-attention agents use and evaluated by the same
code (:func:`glimpse.evaluation.evaluate`), so their numbers share one table.

Each split is held whole as one ``uint8`` tensor on the device (an
:class:`glimpse.data.source.ImageSource`, as the glimpse envs hold it); batches are indexed from it
and scaled to ``[0, 1]``, with shuffled epochs drawn from a seeded
:class:`glimpse.data.source.IndexStream`. No data loader, no workers.

Run folder ``runs/<run_name>/``: ``config.json``, TensorBoard events, ``last.pt`` and
``best.pt`` (atomic; ``--resume`` continues from ``last.pt``), ``metrics.json`` (test metrics
of the best-on-validation checkpoint).

TensorBoard tags; the global step is the number of training images seen:

- ``losses/cross_entropy``, ``train/accuracy`` (means over the last ``log_every`` batches),
  ``charts/{lr,images_per_s}`` and, with an STN, ``charts/stn_area`` (mean ``|det A|`` of
  the affine maps: the input area the warped image reads, relative to the whole image;
  1 at the identity, below 1 when zoomed in) every
  ``log_every`` batches;
- ``eval/{accuracy,error}`` (validation split) after every epoch, ``eval/test_accuracy``
  once at the end;
- ``eval/stn`` (STN only): the first ``log_images`` validation images with the region the
  transformer samples outlined (top row) above the warped images (bottom row), every epoch;
- ``eval/attention/gradcam``: the same images with the Grad-CAM map of the predicted class
  over the output of the last feature stage (:func:`glimpse.attention.grad_cam`) drawn
  over them (:func:`glimpse.viz.overlay_map`), every epoch, for every model;
- ``eval/attention/module``: the same images with the attention block's own spatial map
  (:mod:`soft_baselines.attention_maps`; the STN's sampling footprint) in the same style,
  every epoch, for models whose block has one (not SE, ECA, SK, CAM or the plain CNN);
- ``hparams``: the config as a text table.

Data-parallel (``torchrun``, :mod:`glimpse.distributed`): the model runs in
``DistributedDataParallel``; ``batch_size`` images per rank and step, so the global batch
(and the global step's increment) is ``batch_size x world_size``; each rank reads its own
shard of every shuffled epoch; logged loss and accuracy are sums over ranks (exact);
evaluation is sharded and exact; rank 0 alone writes the run folder. BatchNorm statistics
are per rank (rank 0's running statistics are kept) unless ``--sync-bn`` (CUDA) makes them
global. Launch::

    torchrun --standalone --nproc_per_node 2 scripts/train_soft.py --threads 1
"""

from __future__ import annotations

import json
import math
import time
import warnings
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from glimpse import distributed
from glimpse.data import DATASETS
from glimpse.data.source import ImageSource, IndexStream
from glimpse.evaluation import evaluate, evaluate_sharded
from glimpse.flops import count_flops
from glimpse.loop import Budget, Method, Report, Update, apply_gradients, fit
from glimpse.results import paper_figure
from glimpse.tasks import TASKS, get_task, tasks_of
from glimpse.training import (
    Rule,
    Run,
    RunConfig,
    batches_per_epoch,
    check_config,
    resolve_device,
)
from soft_baselines.backbones import SmallCNN, count_parameters
from soft_baselines.registry import get_entry, list_modules

__all__ = [
    "SOFT_DATASETS",
    "SoftTrainConfig",
    "Splits",
    "build_model",
    "evaluate_model",
    "load_splits",
    "log_attention_images",
    "log_stn_images",
    "lowres_size",
    "stn_image_grid",
    "train_soft",
    "valid_modules",
]

SOFT_DATASETS: tuple[str, ...] = tuple(
    t.name for t in tasks_of("paper", "proxy") if t.num_targets == 1
)
"""Single-label tasks the soft trainer accepts (the one-location, one-target tasks of
:data:`glimpse.tasks.TASKS`); ``twodigit100`` has 100 classes (two digits,
``10 * left + right``), the others 10."""


def valid_modules() -> list[str]:
    """Names accepted by ``--module``: ``"none"``, ``"stn"`` and every registered block."""
    return ["none", "stn", *list_modules("block")]


@dataclass
class SoftTrainConfig(RunConfig):
    """Training a soft-attention model (SmallCNN + attention block or STN) with cross-entropy."""

    module: str = "none"
    """A registered attention block (se, cbam, ...), stn (STN front end) or none (plain CNN)."""
    dataset: str = "mnist"
    """Dataset: mnist (28x28), translated60, cluttered60 (60x60), cluttered100 (100x100),
    dram-pairs / dram-addition (the DRAM paper's MNIST pairs, 55 classes, and addition, 19
    classes), stn-cluttered60 (the STN paper's cluttered 60x60) or twodigit100 (two
    cluttered digits on 100x100, 100 classes: the FCAN proxy)."""
    insert_after: tuple[str, ...] = ("stage2", "stage3")
    """Backbone stages after which the attention block is inserted ('stage1'..'stageK')."""
    module_kwargs: str = "{}"
    """Extra constructor arguments of the block or STN, as JSON: e.g. '{"reduction": 8}'."""
    stn_mode: Literal["affine", "attention"] = "affine"
    """STN transform: affine (6 parameters) or attention (isotropic scale + translation)."""
    widths: tuple[int, ...] = (32, 64, 128)
    """Channels of each backbone stage (one stage per entry)."""
    epochs: int = 20
    """Passes over the training split."""
    batch_size: int = 128
    """Images per gradient step and process (under torchrun the global batch is this
    times the number of processes)."""
    optimizer: Literal["adam", "sgd"] = "adam"
    """Adam, or SGD with momentum."""
    lr: float = 1e-3
    """Initial learning rate."""
    momentum: float = 0.9
    """SGD momentum (ignored by Adam)."""
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    """Learning-rate schedule over all training batches."""
    weight_decay: float = 0.0
    """L2 weight decay of the optimizer."""
    amp: bool = False
    """Mixed precision (float16 autocast, gradient scaling) on CUDA; ignored on CPU (a warning)."""
    log_images: int = 8
    """Validation images whose Grad-CAM maps (eval/attention/gradcam) and, with an STN,
    warps (eval/stn) are logged each epoch; 0: none."""
    sync_bn: bool = False
    """Under torchrun on CUDA: BatchNorm statistics over the global batch (SyncBatchNorm)
    instead of per rank."""
    train_limit: int = 0
    """Train on only the first this many images of the training split (0: all of it)."""
    eval_limit: int = 0
    """Evaluate on only the first this many images of val and test (0: all; smoke runs)."""
    lowres_pixels: int = 0
    """Area-downsample every image to about this many pixels before the CNN (aspect kept:
    ``lowres_size``; 384 on 28x28 gives 20x20), the lowres-cnn control: a CNN at the
    glimpse agents' pixel budget (T x k x g^2; 384 for 6 glimpses of 8x8). 0: full size."""

    RULES: ClassVar[dict[str, Rule]] = {
        "lowres_pixels": (">=", 0),
        "widths": (">=", 1),
        "epochs": (">=", 1),
        "batch_size": (">=", 1),
        "lr": (">=", 0),
        "momentum": ("[)", 0, 1),
        "weight_decay": (">=", 0),
        "log_images": (">=", 0),
        "train_limit": (">=", 0),
        "eval_limit": (">=", 0),
    }
    RESUMABLE: ClassVar[tuple[str, ...]] = ("epochs", "patience")
    """``--resume --epochs N`` with more epochs extends the run (and its cosine)."""

    def resolved(self) -> SoftTrainConfig:
        """A checked copy with the run name chosen. Raises ``ValueError`` on bad input."""
        check_config(self)
        if self.dataset not in SOFT_DATASETS:
            task = TASKS.get(self.dataset)
            hint = (
                f" ({task.num_targets} digits per image; read it with the hard-attention DRAM "
                "agent)"
                if task is not None and task.num_targets > 1
                else ""
            )
            known = "one of" if self.dataset in DATASETS else "not"
            raise ValueError(
                f"dataset {self.dataset!r} is {known} glimpse.data's datasets but not a "
                f"single-label one{hint}; the soft trainer takes: {', '.join(SOFT_DATASETS)}"
            )
        if self.module not in valid_modules():
            kind = ""
            if self.module in list_modules():
                kind = f" ({self.module!r} is a {get_entry(self.module).kind}, not a block)"
            raise ValueError(
                f"unknown module {self.module!r}{kind}; valid: {', '.join(valid_modules())}"
            )
        kwargs = self.module_kwargs_dict()
        if self.module == "none" and kwargs:
            raise ValueError(f"--module none takes no --module-kwargs, got {kwargs}")
        if self.module == "stn" and "mode" in kwargs:
            raise ValueError("set the STN's mode with --stn-mode, not in --module-kwargs")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.amp and self.precision != "fp32":
            raise ValueError(
                f"--amp (float16 with gradient scaling, CUDA) and --precision {self.precision} "
                "are two mixed-precision modes: choose one"
            )
        if self.lowres_pixels:
            h, w = get_task(self.dataset).image_size
            if self.lowres_pixels > h * w:
                raise ValueError(
                    f"--lowres-pixels {self.lowres_pixels} exceeds the {h}x{w} images' "
                    f"{h * w} pixels (0: full size)"
                )
        return replace(
            self,
            widths=tuple(self.widths),
            insert_after=tuple(self.insert_after),
            run_name=self.run_name
            or f"{self.method_name()}-{self.dataset}-s{self.seed}-{int(time.time())}",
        )

    def method_name(self) -> str:
        """The results name of this model: ``soft-<module>``, ``lowres-cnn`` (the plain CNN
        at ``lowres_pixels``) or ``lowres-<module>``."""
        if self.lowres_pixels:
            return "lowres-cnn" if self.module == "none" else f"lowres-{self.module}"
        return f"soft-{self.module}"

    def module_kwargs_dict(self) -> dict[str, Any]:
        """``module_kwargs`` parsed; ``ValueError`` unless it is a JSON object."""
        try:
            kwargs = json.loads(self.module_kwargs or "{}")
        except json.JSONDecodeError as err:
            raise ValueError(
                f"--module-kwargs is not valid JSON ({err}): {self.module_kwargs}"
            ) from None
        if not isinstance(kwargs, dict):
            raise ValueError(f"--module-kwargs must be a JSON object, got {self.module_kwargs}")
        return kwargs


class Splits(dict[str, ImageSource]):
    """``{"train", "val", "test"} -> ImageSource`` plus the dataset's :attr:`num_classes`."""

    num_classes: int = 10


def load_splits(cfg: SoftTrainConfig, device: torch.device) -> Splits:
    """The ``train``, ``val`` and ``test`` splits of ``cfg.dataset``, each held whole as a
    ``uint8`` tensor on ``device`` (the first ``cfg.train_limit`` / ``cfg.eval_limit``
    images if set), and the dataset's number of classes (``len(dataset.classes)``)."""
    kw: dict[str, Any] = {"val_size": cfg.val_size}
    if cfg.download:
        kw["download"] = True
    limits = {"train": cfg.train_limit, "val": cfg.eval_limit, "test": cfg.eval_limit}
    splits = Splits()
    for split, n in limits.items():
        task = get_task(cfg.dataset)
        lim = {"limit": n} if n and task.generated else {}
        ds = task.load(split, cfg.data_root, **kw, **lim)
        splits.num_classes = max(splits.num_classes, len(ds.classes))
        src = ImageSource.from_any(ds, device=device)
        if n and n < len(src):  # MNIST: the first n of the split
            src = ImageSource(src.images[:n], src.labels[:n])
        splits[split] = src
    return splits


def lowres_size(size: tuple[int, int], pixels: int) -> tuple[int, int]:
    """``(H', W')`` with about ``pixels`` pixels and the aspect of ``size = (H, W)``: each
    side scaled by ``sqrt(pixels / (H W))`` and rounded (at least 1, at most the side).
    ``(28, 28)`` and 384 give ``(20, 20)``: 400 pixels, the nearest square."""
    h, w = size
    if pixels < 1:
        raise ValueError(f"pixels must be >= 1, got {pixels}")
    f = math.sqrt(pixels / (h * w))
    return (min(h, max(1, round(h * f))), min(w, max(1, round(w * f))))


def build_model(
    cfg: SoftTrainConfig, image_shape: tuple[int, int, int], num_classes: int = 10
) -> SmallCNN:
    """The SmallCNN for images of shape ``(C, H, W)`` and ``num_classes`` classes: with
    ``cfg.module`` inserted after ``cfg.insert_after``, behind an STN front end, or plain
    (``insert_after`` is then unused); with ``cfg.lowres_pixels``, behind the area
    downsampling to :func:`lowres_size`."""
    c, h, w = image_shape
    kwargs = cfg.module_kwargs_dict()
    common: dict[str, Any] = {"in_channels": c, "num_classes": num_classes, "input_size": (h, w)}
    common["widths"] = cfg.widths
    if cfg.lowres_pixels:
        common["resize_to"] = lowres_size((h, w), cfg.lowres_pixels)
    try:
        if cfg.module == "stn":
            return SmallCNN(**common, insert_after=(), stn={**kwargs, "mode": cfg.stn_mode})
        if cfg.module == "none":
            return SmallCNN(**common, insert_after=())
        return SmallCNN(
            **common, attention=cfg.module, attention_kwargs=kwargs, insert_after=cfg.insert_after
        )
    except TypeError as err:  # an unknown keyword in --module-kwargs
        raise ValueError(f"bad --module-kwargs for {cfg.module!r}: {err}") from None


def _autocast(device: torch.device, enabled: bool) -> AbstractContextManager:
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=enabled)


def evaluate_model(
    model: SmallCNN, source: ImageSource, batch_size: int, amp: bool = False, desc: str = "eval"
) -> dict[str, float]:
    """Accuracy of ``model`` on every image of ``source`` (the shared evaluation; under
    ``torchrun`` every rank must call it: each evaluates its slice of the split)."""
    device = source.images.device
    was_training = model.training
    model.eval()

    def predict(idx: Tensor) -> Tensor:
        x, _ = source.get(idx.to(device))
        with _autocast(device, amp):
            return model(x).argmax(1)

    try:
        return evaluate_sharded(predict, source.labels, batch_size, desc, evaluate)
    finally:
        model.train(was_training)


def _stn_area(theta: Tensor) -> Tensor:
    """``|det A|`` of the linear part of ``(B, 2, 3)`` affine maps: input area read / total."""
    a = theta[:, :, :2].float()
    return (a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]).abs()


def stn_image_grid(images: Tensor, warped: Tensor, theta: Tensor) -> Tensor:
    """One RGB ``uint8`` picture ``(3, H*, W*)`` of what a spatial transformer did.

    Top row: the inputs ``images`` ``(n, C, H, W)`` in ``[0, 1]`` with the region the
    transformer samples outlined in red (the output's corners ``(±1, ±1)`` mapped through
    ``theta`` ``(n, 2, 3)``, drawn on the outermost canvas pixels at ``±1``, clipped to the
    canvas). Bottom row: the ``warped`` outputs ``(n, C, H', W')``, resized to
    ``(H, W)`` if needed. Both rows are upscaled by :func:`glimpse.viz.default_upscale`.
    """
    from PIL import Image, ImageDraw
    from torchvision.utils import make_grid

    from glimpse.viz import default_upscale

    n, _, h, w = images.shape
    u = default_upscale(h, w)
    size = (h * u, w * u)
    top = F.interpolate(images.float().cpu(), size=size, mode="nearest")
    bottom = F.interpolate(warped.float().cpu(), size=size, mode="nearest")
    corners = torch.tensor([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]])
    src = corners @ theta.float().cpu().transpose(1, 2)  # (n, 4, 2) normalised input coords
    # [-1, 1] -> outermost canvas pixels [0, size - 1], so the identity outlines the border
    px = ((src + 1) / 2 * torch.tensor([w * u - 1, h * u - 1])).round()
    outlined = []
    for i in range(n):
        gray = (top[i].mean(0).clamp(0, 1) * 255).to(torch.uint8).numpy()
        canvas = Image.fromarray(gray, "L").convert("RGB")
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in px[i].tolist()], outline=(255, 0, 0))
        outlined.append(torch.from_numpy(np.array(canvas)).permute(2, 0, 1))
    warped_rgb = (
        (bottom.mean(1, keepdim=True).clamp(0, 1) * 255).to(torch.uint8).expand(-1, 3, -1, -1)
    )
    return make_grid(
        torch.cat([torch.stack(outlined), warped_rgb]), nrow=n, padding=2, pad_value=255
    )


def log_attention_images(run: Run, model: SmallCNN, source: ImageSource, n: int, step: int) -> None:
    """Log the Grad-CAM maps of the first ``n`` images of ``source`` over the images, as
    ``eval/attention/gradcam`` (as many per row as TensorBoard shows at full size,
    :func:`glimpse.viz.tensorboard_ncols`), and, when the model's attention block (or STN)
    has a spatial map, the block's own map as ``eval/attention/module``
    (:func:`soft_baselines.attention_maps.soft_attention_map`: each block's map upsampled
    bilinearly and normalised, averaged over the inserted blocks). The model's mode and
    parameters are untouched."""
    if n <= 0 or not run.enabled:
        return
    from torchvision.utils import make_grid

    from glimpse.attention import grad_cam
    from glimpse.viz import overlay_map, tensorboard_ncols
    from soft_baselines.attention_maps import soft_attention_map, spatial_map_blocks

    n = min(n, len(source))
    x, _ = source.get(torch.arange(n, device=source.images.device))
    was_training = model.training
    model.eval()
    try:
        maps = grad_cam(model, model.features[-1], x.float())
        own = soft_attention_map(model, x.float())[0] if spatial_map_blocks(model) else None
    finally:
        model.train(was_training)

    def row(m: Tensor) -> Tensor:
        tiles = [
            torch.from_numpy(overlay_map(x[i].float().cpu().clamp(0, 1), m[i].cpu())).permute(
                2, 0, 1
            )
            for i in range(n)
        ]
        nrow = tensorboard_ncols(*x.shape[-2:])  # legible: TensorBoard does not shrink it
        return make_grid(torch.stack(tiles), nrow=nrow, padding=2, pad_value=255)

    run.writer.add_image("eval/attention/gradcam", row(maps), step)
    if own is not None:
        run.writer.add_image("eval/attention/module", row(own), step)


def log_stn_images(
    run: Run, model: SmallCNN, source: ImageSource, n: int, step: int, amp: bool = False
) -> None:
    """Log :func:`stn_image_grid` of the first ``n`` images of ``source`` as ``eval/stn``."""
    if model.stn is None or n <= 0 or not run.enabled:
        return
    n = min(n, len(source))
    x, _ = source.get(torch.arange(n, device=source.images.device))
    was_training = model.training
    model.eval()
    with torch.no_grad(), _autocast(x.device, amp):
        warped, theta = model.stn.transform(x)
    model.train(was_training)
    run.writer.add_image("eval/stn", stn_image_grid(x, warped, theta), step)


class SoftMethod(Method):
    """A SmallCNN with an attention block or an STN front end, trained by cross-entropy:
    the pieces that :func:`glimpse.loop.fit` cannot know. Data-parallel through DDP
    (:func:`glimpse.distributed.wrap_ddp`); AMP on CUDA with ``--amp``."""

    loss_key = "losses/cross_entropy"

    def __init__(self, cfg: SoftTrainConfig, device: torch.device, run: Run) -> None:
        world = distributed.world_size()
        if cfg.sync_bn and world > 1 and device.type != "cuda":
            raise ValueError(f"--sync-bn needs CUDA (SyncBatchNorm); this job runs on {device}")
        self.cfg, self.device = cfg, device
        with distributed.local_main_first():  # one process per node generates the datasets
            self.splits = load_splits(cfg, device)
        self.train = self.splits["train"]
        self.num_classes = getattr(self.splits, "num_classes", 10)
        model = build_model(cfg, self.train.image_shape, self.num_classes).to(device)
        # bf16 convolutions are fastest in channels_last (oneDNN, cuDNN); weights stay fp32
        self.memory_format = (
            torch.channels_last if cfg.precision == "bf16" else torch.contiguous_format
        )
        if cfg.precision == "bf16":
            model = model.to(memory_format=self.memory_format)
        self.params = count_parameters(model)
        if cfg.sync_bn and world > 1:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        distributed.broadcast_parameters(model)
        self.net = distributed.wrap_ddp(model, device)  # trains; `model` is saved and evaluated
        self.ddp = self.net is not model
        self.amp = cfg.amp and device.type == "cuda"
        if cfg.optimizer == "adam":
            self.optimizer = torch.optim.Adam(
                model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
            )
        else:
            self.optimizer = torch.optim.SGD(
                model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        self.stream = IndexStream(
            len(self.train), shuffle=True, seed=cfg.seed, rank=distributed.rank(), world_size=world
        )
        self.per_epoch = batches_per_epoch(
            self.stream.shard_size, cfg.batch_size, cfg.max_batches_per_epoch
        )
        self.budget = Budget(
            total_updates=cfg.epochs * self.per_epoch,
            eval_every=self.per_epoch,
            images_per_update=cfg.batch_size * world,
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)
        self.name, self.task = cfg.method_name(), cfg.dataset
        self.world = world
        zero = lambda: torch.zeros((), device=device)  # noqa: E731
        self._sums = {"loss": zero(), "right": zero(), "area": zero()}
        self._seen = 0

    def describe(self) -> str:
        procs = f" x {self.world} processes" if self.world > 1 else ""
        return (
            f"{self.cfg.run_name}: {self.params:,} parameters, {self.per_epoch} batches per "
            f"epoch on {self.device}{procs}"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scaler.load_state_dict(state["scaler"])

    def update(self) -> Update:
        idx = self.stream.next(self.cfg.batch_size)
        x, y = self.train.get(idx.to(self.device))
        x = x.contiguous(memory_format=self.memory_format)
        with _autocast(self.device, self.amp):
            logits = self.net(x)
            loss = F.cross_entropy(logits.float(), y)
        apply_gradients(loss, self.model, self.optimizer, 0.0, self.scaler, ddp=self.ddp)
        self._seen += y.shape[0]
        self._sums["loss"] += loss.detach() * y.shape[0]
        self._sums["right"] += (logits.detach().argmax(1) == y).sum()
        if self.model.stn is not None:
            self._sums["area"] += _stn_area(self.model.stn.last_theta).sum()
        debug = {"loss": loss.item()} if distributed.debugging() else None
        return Update(indices=idx, debug=debug)

    def progress_scalars(self, last: Update) -> None:
        return None  # no per-step host sync: the bar shows the logged window's means

    def train_scalars(self, last: Update) -> dict[str, float]:
        s = self._sums
        loss, right, area, seen = distributed.reduce_counts(
            s["loss"], s["right"], s["area"], self._seen
        )
        out = {"losses/cross_entropy": loss / seen, "train/accuracy": right / seen}
        if self.model.stn is not None:
            out["charts/stn_area"] = area / seen
        for acc in s.values():
            acc.zero_()
        self._seen = 0
        return out

    def validate(self) -> dict[str, float]:
        return evaluate_model(
            self.model, self.splits["val"], self.cfg.eval_batch_size, self.amp, desc="val"
        )

    def log_images(self, run: Run, step: int) -> None:
        val, n = self.splits["val"], self.cfg.log_images
        log_stn_images(run, self.model, val, n, step, self.amp)
        log_attention_images(run, self.model, val, n, step)

    def report(self) -> Report:
        test = evaluate_model(
            self.model, self.splits["test"], self.cfg.eval_batch_size, self.amp, desc="test"
        )
        paper = paper_figure(self.cfg.dataset, self.name)  # only where the data is the paper's
        return Report(
            test_error=test["error"],
            protocol="deterministic",
            protocols={"deterministic": {"test_error": test["error"]}},
            selection="best.pt: highest validation accuracy after an epoch",
            details={
                "module": self.cfg.module,
                "dataset": self.cfg.dataset,
                "num_classes": self.num_classes,
            },
            paper_error=None if paper is None else paper.error_pct / 100,
            paper_ref=None if paper is None else paper.ref,
        )

    def cost(self) -> dict[str, Any]:
        x, _ = self.splits["test"].get(torch.arange(min(8, len(self.splits["test"]))))
        flops, _ = count_flops(lambda: self.model(x.to(self.device)))
        return {
            "inference_flops_per_image": flops / x.shape[0],
            "pixels_per_image": self.model.pixels_seen,
            "params": self.params,
        }


def train_soft(cfg: SoftTrainConfig) -> dict[str, Any]:
    """Train the model ``cfg`` describes through :func:`glimpse.loop.fit`; return the
    ``metrics.json`` record (test metrics of the best-on-validation checkpoint)."""
    cfg = cfg.resolved()
    if cfg.amp and resolve_device(cfg.device).type != "cuda":
        warnings.warn(
            f"--amp is CUDA-only; training in float32 on {cfg.device}", UserWarning, stacklevel=2
        )
    return fit(SoftMethod, cfg)
