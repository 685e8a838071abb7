"""Hard versus soft attention on the same data: one comparison table and two plots.

The library side of ``scripts/compare.py``. For every dataset, method and seed it trains a
run (or reuses a finished one) under ``<out>/runs/<method>-<dataset>-s<seed>/`` with the
project's own trainers, then measures the trained model the same way for every method:

- **test accuracy**: the trainer's ``metrics.json``, computed by the one shared
  :func:`glimpse.evaluation.evaluate` on the full test split (best-on-validation checkpoint);
  mean ± sample std over seeds;
- **parameters**: trainable and frozen, of the model that predicts;
- **FLOPs per image**: counted by :func:`glimpse.flops.count_flops` (``FlopCounterMode``) on
  a real forward pass of ``flops_batch`` test images, divided by the batch. Hard agents: the
  whole deterministic episode through the env, every glimpse step's networks (glimpse,
  core, location, classifier, baseline; DRAM's context network). The retina's resampling
  (``grid_sample``) is part of the counted episode but has no FLOP formula in the counter,
  so it adds 0: the numbers are the networks' multiply-accumulates (x2) only;
- **pixels seen per image**: hard agents ``steps x scales x g^2`` (plus the ``s x s``
  context view for DRAM), soft models the whole ``H x W`` image (per channel);
- **training wall time**: the trainer's own timing, ``train_seconds`` of its
  ``metrics.json`` (one schema for every trainer, :data:`glimpse.loop.METRICS_KEYS`:
  training and per-epoch validation, summed over resumed sessions);
- **inference images/s**: measured on ``throughput_images`` test images in evaluation
  batches (hard agents: whole episodes through the env, retina included), one warm-up batch.

Methods: ``ram`` (Mnih et al. 2014), ``dram`` (Ba et al. 2015; only where it applies,
MultiMNIST by default), ``ppo`` (PPO-hybrid on the RAM policy, :mod:`agents.ppo_train`),
``parts`` (:mod:`agents.parts_train`; it trains on its two-digit proxy and CUB, so it is
``n/a`` here), ``soft-none`` (the plain SmallCNN), ``soft-stn`` (Jaderberg et al. 2015) and
``soft-<block>`` for every registered attention block. The matched controls of issue
17: ``ram-conv`` (RAM with a conv glimpse network), ``glimpse-random`` and ``glimpse-grid``
(RAM's network on uniformly random locations / a fixed scan path, classifier trained by
backpropagation only; :mod:`agents.fixed`), ``glimpse-soft`` (RAM's network with
deterministic locations learnt by backpropagation through the differentiable retina;
:mod:`agents.soft_locations`) and ``lowres-cnn`` (the plain SmallCNN on the
image area-downsampled to the glimpse agents' pixel budget ``T x k x g^2`` of the task,
:class:`LowResMethod`). A method or dataset that is not
there is reported as ``missing`` with the reason (:meth:`Method.unavailable`); a method
that does not apply to a dataset as ``n/a``. Nothing is estimated. A REINFORCE-style
trainer on the glimpse envs joins as a :class:`HardMethod` with its own
``make_config``/``train``.

Top floor (:mod:`glimpse.experiments`): it trains and loads every kind of model, so it
imports agents, envs and soft_baselines.

Resuming: a run folder with ``metrics.json`` is finished and reused (after checking that its
``config.json`` matches the budgets asked for); one with ``last.pt`` is resumed; anything else
is restarted. Measurements are cached in the run folder's ``compare.json``. Every file is
written atomically (:func:`glimpse.io.atomic_write`).

Outputs in ``<out>/``: ``results.md``, ``results.csv``, ``results.json``,
``accuracy_vs_pixels.png``, ``accuracy_vs_flops.png``.
"""

from __future__ import annotations

import abc
import csv
import io
import json
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from agents.config import RAM_AGENTS, HardTrainConfig
from agents.ppo_train import PPOTrainConfig, train_ppo
from agents.reinforce import predict
from agents.train import train_reinforce
from glimpse.data import ImageSource
from glimpse.data.paths import resolve_root
from glimpse.experiments.playback import eval_env, load_agent
from glimpse.flops import count_flops
from glimpse.io import atomic_write, read_json, write_json
from glimpse.tasks import TASKS, get_task, tasks_of
from glimpse.training import (
    Rule,
    check_config,
    config_to_dict,
    load_checkpoint,
    resolve_device,
)
from soft_baselines.backbones import count_parameters
from soft_baselines.train import (
    SOFT_DATASETS,
    SoftTrainConfig,
    build_model,
    train_soft,
    valid_modules,
)

__all__ = [
    "ALL_DATASETS",
    "QUICK",
    "CompareConfig",
    "HardMethod",
    "LowResMethod",
    "Method",
    "PartsMethod",
    "SoftMethod",
    "all_methods",
    "merge_comparisons",
    "run_comparison",
    "write_outputs",
]

ALL_DATASETS: tuple[str, ...] = (*(t.name for t in tasks_of("paper")), "cub")
"""Datasets of the full comparison: the papers' tasks of :data:`glimpse.tasks.TASKS`, then
``cub`` (only when CUB-200-2011 is in the data root)."""

QUICK: dict[str, Any] = {
    "datasets": ("mnist", "cub"),
    "seeds": (0,),
    "hard_epochs": 1,
    "soft_epochs": 1,
    "batch_size": 64,
    "max_batches_per_epoch": 50,
    "val_size": 1000,
    "soft_widths": (8, 16, 32),
    "throughput_images": 500,
}
"""What ``--quick`` sets: a smoke comparison on MNIST (CUB shows how a missing dataset is
reported), one seed, one epoch of 50 batches of 64, a 1000-image validation split and a
narrow SmallCNN (8, 16, 32 channels). Every method runs; the test split stays whole."""

_IGNORED_KEYS = {"resume", "threads", "device", "data_root", "runs_root", "download"}
"""Config keys that may differ between a finished run and the comparison reusing it."""


@dataclass
class CompareConfig:
    """Hard versus soft attention: which runs to train or reuse, with which budgets."""

    datasets: tuple[str, ...] | None = None
    """Datasets (default: all of mnist translated60 cluttered60 cluttered100 multimnist
    dram-pairs dram-addition stn-cluttered60 cub)."""
    methods: tuple[str, ...] | None = None
    """Methods (default: all: ram dram ppo parts ram-conv glimpse-random glimpse-grid
    glimpse-soft soft-none soft-stn soft-<every block> lowres-cnn)."""
    seeds: tuple[int, ...] | None = None
    """Seeds per method and dataset (default 0 1 2; --quick: 0)."""
    quick: bool = False
    """Smoke comparison in a few CPU minutes: sets the values of compare.QUICK."""
    out: str | None = None
    """Output folder (default runs/compare, or runs/compare-quick with --quick)."""
    hard_epochs: int = 30
    """Epochs of the REINFORCE agents (RAM, DRAM)."""
    soft_epochs: int = 20
    """Epochs of the soft-attention models."""
    batch_size: int = 128
    """Training batch size of every method."""
    max_batches_per_epoch: int = 0
    """Cap on training batches per epoch (0: full passes)."""
    train_limit: int = 0
    """Hard agents only: train on the first this many training images (0: all)."""
    val_size: int = 5000
    """Validation images held out from the training split (the same for every method)."""
    soft_widths: tuple[int, ...] = (32, 64, 128)
    """Channels of the soft models' SmallCNN stages."""
    dram_datasets: tuple[str, ...] = tuple(t.name for t in tasks_of("paper") if t.num_targets > 1)
    """Datasets DRAM runs on (it is the multi-object agent; RAM covers the single digits)."""
    eval_batch_size: int = 1000
    """Images per evaluation / throughput batch."""
    flops_batch: int = 8
    """Test images in the FLOP-counting forward pass."""
    throughput_images: int = 1000
    """Test images timed for inference images/s."""
    threads: int = 1
    """PyTorch CPU threads (1 on a shared small machine)."""
    device: str = "auto"
    """'auto' (CUDA if available), 'cpu' or 'cuda[:N]'."""
    data_root: str | None = None
    """Folder holding MNIST/raw (and CUB_200_2011/) (default: $GLIMPSE_DATA, else ./data)."""
    merge: tuple[str, ...] | None = None
    """Train nothing: combine these finished comparison folders (their results.json, same
    budgets) into one table and one pair of plots in --out."""

    RULES: ClassVar[dict[str, Rule]] = {
        "seeds": (">=", 0),
        "hard_epochs": (">=", 1),
        "soft_epochs": (">=", 1),
        "batch_size": (">=", 1),
        "max_batches_per_epoch": (">=", 0),
        "train_limit": (">=", 0),
        "val_size": (">=", 0),
        "soft_widths": (">=", 1),
        "eval_batch_size": (">=", 1),
        "flops_batch": (">=", 1),
        "throughput_images": (">=", 1),
        "threads": (">=", 0),
    }
    """Bounds of the numeric fields (:func:`glimpse.training.check_config`)."""

    def resolved(self, known: Sequence[str] | None = None) -> CompareConfig:
        """A checked copy with ``--quick`` applied and the defaults filled in; ``known``:
        the valid method names (default: :func:`all_methods`)."""
        check_config(self)
        if self.out is not None and Path(self.out).exists() and not Path(self.out).is_dir():
            raise ValueError(f"--out {self.out} is a file; expected a folder (new or existing)")
        cfg = replace(self, **QUICK) if self.quick else replace(self)
        # datasets and seeds given on the command line win over --quick's
        cfg.datasets = tuple(self.datasets or cfg.datasets or ALL_DATASETS)
        cfg.seeds = tuple(self.seeds if self.seeds is not None else (cfg.seeds or (0, 1, 2)))
        cfg.out = cfg.out or ("runs/compare-quick" if self.quick else "runs/compare")
        bad = [d for d in cfg.datasets if d not in ALL_DATASETS]
        if bad:
            raise ValueError(f"unknown dataset(s) {bad}; valid: {', '.join(ALL_DATASETS)}")
        known = list(all_methods() if known is None else known)
        cfg.methods = tuple(cfg.methods or known)
        bad = [m for m in cfg.methods if m not in known]
        if bad:
            raise ValueError(f"unknown method(s) {bad}; valid: {', '.join(known)}")
        if not cfg.seeds:
            raise ValueError("seeds must hold at least one seed")
        return cfg

    def budget(self, kind: str) -> str:
        """One-line training budget of a ``"hard"`` or ``"soft"`` method."""
        epochs = self.hard_epochs if kind == "hard" else self.soft_epochs
        text = f"{epochs} ep x "
        text += f"{self.max_batches_per_epoch}" if self.max_batches_per_epoch else "all"
        text += f" batches of {self.batch_size}"
        if kind == "hard" and self.train_limit:
            text += f", first {self.train_limit} train images"
        if kind == "soft":
            text += f", widths {'-'.join(map(str, self.soft_widths))}"
        return text


# --------------------------------------------------------------------------- methods


class Method(abc.ABC):
    """One row family of the table: how to configure, train and measure a method.

    Subclasses set ``name`` and ``kind`` (``"hard"`` or ``"soft"``).
    """

    name: str
    kind: str

    def unavailable(self) -> str | None:
        """Why the method cannot run at all (e.g. its module is missing), else ``None``."""
        return None

    def not_applicable(self, dataset: str, cc: CompareConfig) -> str | None:
        """Why the method does not apply to ``dataset`` under ``cc``, else ``None``."""
        return None

    @abc.abstractmethod
    def make_config(self, cc: CompareConfig, dataset: str, seed: int, run_dir: Path) -> Any:
        """The trainer's resolved config for this run (folder ``run_dir``, not resuming)."""

    @abc.abstractmethod
    def train(self, cfg: Any) -> dict[str, Any]:
        """Train (or resume) the run; returns its test metrics (``test_accuracy``, ...)."""

    @abc.abstractmethod
    def profile(
        self, cfg: Any, run_dir: Path, cc: CompareConfig, device: torch.device
    ) -> dict[str, Any]:
        """``params``, ``flops_per_image``, ``pixels_per_image``, ``images_per_s`` of the
        run's best checkpoint."""


def _run_kwargs(cc: CompareConfig, seed: int, run_dir: Path) -> dict[str, Any]:
    return {
        "seed": seed,
        "threads": cc.threads,
        "device": cc.device,
        "data_root": cc.data_root,
        "runs_root": str(run_dir.parent),
        "run_name": run_dir.name,
        "val_size": cc.val_size,
        "eval_batch_size": cc.eval_batch_size,
        "max_batches_per_epoch": cc.max_batches_per_epoch,
        "batch_size": cc.batch_size,
    }


def _timed_images_per_s(predict: Callable[[torch.Tensor], Any], n: int, batch: int) -> float:
    """Images per second of ``predict(indices)`` over ``n`` images (one warm-up batch)."""
    predict(torch.arange(min(batch, n)))
    start = time.perf_counter()
    for s in range(0, n, batch):
        predict(torch.arange(s, min(s + batch, n)))
    return n / (time.perf_counter() - start)


def profile_glimpse_agent(
    policy: Any, cfg: Any, cc: CompareConfig, device: torch.device
) -> dict[str, Any]:
    """Measure a :class:`agents.policy.GlimpsePolicy` of a run with config ``cfg``
    (:class:`agents.train.HardTrainConfig`-like) on its test split (see the module docstring)."""
    venv = eval_env(cfg, "test", cc.flops_batch, device)
    n_flops = min(cc.flops_batch, len(venv.source))
    venv = venv if n_flops == venv.num_envs else eval_env(cfg, "test", n_flops, device)
    flops, _ = count_flops(lambda: predict(policy, venv, torch.arange(n_flops)))
    mdp = venv.config
    pixels = mdp.max_steps * mdp.num_scales * mdp.glimpse_size**2 + mdp.context_size**2
    n = min(cc.throughput_images, len(venv.source))
    batch = min(cc.eval_batch_size, n)
    tvenv = eval_env(cfg, "test", batch, device)

    def run(idx: torch.Tensor) -> Any:
        return predict(policy, tvenv, idx)

    return {
        "params": count_parameters(policy),
        "flops_per_image": flops / n_flops,
        "pixels_per_image": pixels,
        "images_per_s": _timed_images_per_s(run, n, batch),
        "image_shape": list(venv.source.image_shape),
        "glimpses": mdp.max_steps,
        "scales": mdp.num_scales,
        "glimpse_size": mdp.glimpse_size,
        "context_size": mdp.context_size,
    }


@dataclass
class HardMethod(Method):
    """A glimpse agent trained with the REINFORCE trainer (:func:`agents.train.train_reinforce`),
    or any trainer with the same run-folder conventions (pass ``make_config``/``train_fn``)."""

    name: str
    agent: str
    tasks: tuple[str, ...] | None = None
    """Datasets it runs on (``None``: every task of the trainer)."""
    make_config_fn: Callable[[CompareConfig, str, int, Path], Any] | None = None
    train_fn: Callable[[Any], dict[str, Any]] | None = None
    kind: str = "hard"

    def not_applicable(self, dataset: str, cc: CompareConfig) -> str | None:
        tasks = cc.dram_datasets if self.agent == "dram" and self.tasks is None else self.tasks
        if tasks is not None and dataset not in tasks:
            return f"{self.name} runs on {', '.join(tasks)} here"
        task = TASKS.get(dataset)
        if task is None or task.kind == "parts":
            return f"no glimpse task for {dataset}"
        if self.agent in RAM_AGENTS and task.num_targets > 1:
            return f"RAM reads one digit (DRAM covers {dataset})"
        return None

    def make_config(self, cc: CompareConfig, dataset: str, seed: int, run_dir: Path) -> Any:
        if self.make_config_fn is not None:
            return self.make_config_fn(cc, dataset, seed, run_dir)
        return HardTrainConfig(
            task=dataset,  # type: ignore[arg-type]
            agent=self.agent,  # type: ignore[arg-type]
            epochs=cc.hard_epochs,
            train_limit=cc.train_limit,
            **_run_kwargs(cc, seed, run_dir),
        ).resolved()

    def train(self, cfg: Any) -> dict[str, Any]:
        if self.train_fn is not None:
            return self.train_fn(cfg)
        return train_reinforce(cfg)

    def profile(
        self, cfg: Any, run_dir: Path, cc: CompareConfig, device: torch.device
    ) -> dict[str, Any]:
        policy, cfg, _ = load_agent(run_dir, device, "best", "test", num_envs=1)
        return profile_glimpse_agent(policy, cfg, cc, device)


@dataclass
class SoftMethod(Method):
    """A SmallCNN with an attention block, an STN front end or nothing
    (:func:`soft_baselines.train.train_soft`)."""

    module: str
    kind: str = "soft"

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"soft-{self.module}"

    def not_applicable(self, dataset: str, cc: CompareConfig) -> str | None:
        if dataset not in SOFT_DATASETS:
            return f"the soft trainer takes single-label {', '.join(SOFT_DATASETS)}"
        return None

    def make_config(self, cc: CompareConfig, dataset: str, seed: int, run_dir: Path) -> Any:
        return SoftTrainConfig(
            module=self.module,
            dataset=dataset,
            epochs=cc.soft_epochs,
            widths=tuple(cc.soft_widths),
            **self.extra_config(dataset),
            **_run_kwargs(cc, seed, run_dir),
        ).resolved()

    def extra_config(self, dataset: str) -> dict[str, Any]:
        """Further :class:`SoftTrainConfig` fields of this method on ``dataset``."""
        return {}

    def train(self, cfg: Any) -> dict[str, Any]:
        return train_soft(cfg)

    def profile(
        self, cfg: Any, run_dir: Path, cc: CompareConfig, device: torch.device
    ) -> dict[str, Any]:
        test = ImageSource.from_any(
            cfg.dataset, "test", cfg.data_root, device, {"val_size": cfg.val_size}
        )
        model = build_model(cfg, test.image_shape).to(device)
        model.load_state_dict(load_checkpoint(run_dir / "best.pt", device)["model"])
        model.eval()
        nf = min(cc.flops_batch, len(test))
        x, _ = test.get(torch.arange(nf, device=device))
        flops, _ = count_flops(lambda: model(x))
        n = min(cc.throughput_images, len(test))

        @torch.no_grad()
        def run(idx: torch.Tensor) -> Any:
            return model(test.get(idx.to(device))[0]).argmax(1)

        c, h, w = test.image_shape
        return {
            "params": count_parameters(model),
            "flops_per_image": flops / nf,
            "pixels_per_image": model.pixels_seen,
            "images_per_s": _timed_images_per_s(run, n, min(cc.eval_batch_size, n)),
            "image_shape": [c, h, w],
        }


def glimpse_pixels(dataset: str) -> int:
    """The glimpse agents' pixel budget on ``dataset``: ``T x k x g^2`` of its task's
    defaults (:data:`glimpse.tasks.TASKS`; 384 on MNIST)."""
    task = get_task(dataset)
    return task.num_glimpses * task.num_scales * task.glimpse_size**2


@dataclass
class LowResMethod(SoftMethod):
    """``lowres-cnn``: the plain SmallCNN on the image area-downsampled to about the glimpse
    agents' pixel budget (:func:`glimpse_pixels`; ``--lowres-pixels`` of
    :mod:`soft_baselines.train`): "same pixels, no attention"."""

    module: str = "none"

    @property
    def name(self) -> str:  # type: ignore[override]
        return "lowres-cnn"

    def extra_config(self, dataset: str) -> dict[str, Any]:
        return {"lowres_pixels": glimpse_pixels(dataset)}


def _ppo_config(cc: CompareConfig, dataset: str, seed: int, run_dir: Path) -> PPOTrainConfig:
    """PPO-hybrid (:mod:`agents.ppo_train`) on the RAM policy, with REINFORCE's budget:
    ``hard_epochs`` passes over the training split, one episode per image."""
    return PPOTrainConfig(
        task=dataset,
        agent="ram",
        algo="ppo-hybrid",
        epochs=cc.hard_epochs,
        train_limit=cc.train_limit,
        **_run_kwargs(cc, seed, run_dir),
    ).resolved()


@dataclass
class PartsMethod(Method):
    """The parts agent (:mod:`agents.parts_train`) trains on its two-digit proxy and on CUB
    (``scripts/train_parts.py``), not on this comparison's tasks: it is listed, and
    reported ``n/a`` on every dataset, until it has a comparison adapter."""

    name: str = "parts"
    kind: str = "hard"
    reason: str = (
        "the parts agent runs on its two-digit proxy and CUB (scripts/train_parts.py); "
        "no comparison adapter yet"
    )

    def not_applicable(self, dataset: str, cc: CompareConfig) -> str | None:
        return self.reason

    def make_config(self, cc: CompareConfig, dataset: str, seed: int, run_dir: Path) -> Any:
        raise RuntimeError(f"{self.name}: {self.reason}")

    def train(self, cfg: Any) -> dict[str, Any]:
        raise RuntimeError(f"{self.name}: {self.reason}")

    def profile(
        self, cfg: Any, run_dir: Path, cc: CompareConfig, device: torch.device
    ) -> dict[str, Any]:
        raise RuntimeError(f"{self.name}: {self.reason}")


def all_methods() -> dict[str, Method]:
    """Every method by name, in table order: hard agents, then soft models."""
    methods: list[Method] = [
        HardMethod("ram", "ram"),
        HardMethod("dram", "dram"),
        HardMethod("ppo", "ram", make_config_fn=_ppo_config, train_fn=train_ppo),
        PartsMethod(),
        HardMethod("ram-conv", "ram-conv"),
        HardMethod("glimpse-random", "glimpse-random"),
        HardMethod("glimpse-grid", "glimpse-grid"),
        HardMethod("glimpse-soft", "glimpse-soft"),
        *(SoftMethod(m) for m in valid_modules()),
        LowResMethod(),
    ]
    return {m.name: m for m in methods}


# --------------------------------------------------------------------------- running


def _dataset_missing(dataset: str, data_root: str | None) -> str | None:
    if dataset != "cub":
        return None
    root = resolve_root(data_root)
    if not (root / "CUB_200_2011").is_dir():
        return f"CUB-200-2011 not found in {root}/CUB_200_2011"
    return None


def _field_defaults(cfg: Any) -> dict[str, Any]:
    """JSON-ready defaults of the fields of config dataclass ``cfg`` that have one."""
    if not is_dataclass(cfg):
        return {}
    out = {}
    for f in fields(cfg):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return {k: json.loads(json.dumps(v, default=str)) for k, v in out.items()}


def _check_same_config(run_dir: Path, cfg: Any) -> None:
    """Raise ``ValueError`` if the finished run in ``run_dir`` used other settings."""
    saved = read_json(run_dir / "config.json")
    wanted = config_to_dict(cfg)
    # a field added to the config after the run was made is what the run did at its default
    defaults = _field_defaults(cfg)
    diff = [
        f"{k}: {saved.get(k)!r} there, {v!r} wanted"
        for k, v in wanted.items()
        if k not in _IGNORED_KEYS
        and saved.get(k) != v
        and not (k not in saved and k in defaults and defaults[k] == v)
    ]
    if diff:
        raise ValueError(
            f"{run_dir} holds a run with other settings ({'; '.join(diff)}); "
            "choose another --out folder or delete that run folder"
        )


def run_one(
    method: Method, cc: CompareConfig, dataset: str, seed: int, device: torch.device
) -> dict[str, Any]:
    """Train (or reuse, or resume) one run and measure it; returns its record."""
    run_dir = Path(cc.out) / "runs" / f"{method.name}-{dataset}-s{seed}"
    cfg = method.make_config(cc, dataset, seed, run_dir)
    metrics_path = run_dir / "metrics.json"
    reused = metrics_path.is_file()
    wall = None
    if reused:
        _check_same_config(run_dir, cfg)
        metrics = read_json(metrics_path)
    else:
        resume = (run_dir / "last.pt").is_file()
        if resume:
            _check_same_config(run_dir, cfg)
        elif run_dir.exists():
            shutil.rmtree(run_dir)  # died before its first checkpoint: nothing to resume
        t0 = time.perf_counter()
        metrics = method.train(replace(cfg, resume=resume))
        wall = time.perf_counter() - t0
    prof_path = run_dir / "compare.json"
    prof = read_json(prof_path) if prof_path.is_file() else None
    if prof is None or prof.get("throughput_images") != cc.throughput_images:
        prof = method.profile(cfg, run_dir, cc, device)
        prof["throughput_images"] = cc.throughput_images
        prof["device"] = str(device)
        if not reused:
            prof["train_call_seconds"] = wall  # data loading and test evaluation included
        write_json(prof_path, prof)
    # every trainer's metrics.json holds train_seconds (glimpse.loop.METRICS_KEYS); runs
    # written before the one schema are timed by the whole train call instead
    train_s = metrics.get("train_seconds", prof.get("train_call_seconds"))
    return {
        "run": str(run_dir),
        "seed": seed,
        "reused": reused,
        "test_accuracy": metrics["test_accuracy"],
        "train_seconds": train_s,
        **{k: prof[k] for k in ("params", "flops_per_image", "pixels_per_image", "images_per_s")},
    }


def _mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values))


def _row(dataset: str, method: Method, status: str, cc: CompareConfig) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "method": method.name,
        "kind": method.kind,
        "status": status,
        "seeds": 0,
        "test_accuracy": None,
        "test_accuracy_std": None,
        "params": None,
        "flops_per_image": None,
        "pixels_per_image": None,
        "train_seconds": None,
        "images_per_s": None,
        "budget": cc.budget(method.kind),
        "runs": [],
    }


def run_comparison(
    cc: CompareConfig, methods: dict[str, Method] | None = None
) -> list[dict[str, Any]]:
    """Train/reuse every run of ``cc``, write the tables and plots; return the table rows.

    ``methods`` replaces :func:`all_methods` (tests plug in their own).
    """
    methods = methods or all_methods()
    cc = cc.resolved(list(methods))
    device = resolve_device(cc.device)
    if cc.threads:
        torch.set_num_threads(cc.threads)
    out = Path(cc.out)
    rows = []
    for dataset in cc.datasets:
        data_missing = _dataset_missing(dataset, cc.data_root)
        if data_missing is not None:  # one row for the whole dataset
            row = _row(dataset, methods[cc.methods[0]], f"missing: {data_missing}", cc)
            rows.append({**row, "method": "all", "kind": "", "budget": ""})
            continue
        for name in cc.methods:
            method = methods[name]
            why = method.unavailable()
            if why is not None:
                rows.append(_row(dataset, method, f"missing: {why}", cc))
                continue
            why = method.not_applicable(dataset, cc)
            if why is not None:
                rows.append(_row(dataset, method, f"n/a: {why}", cc))
                continue
            recs = []
            for seed in cc.seeds:
                print(f"== {method.name} on {dataset}, seed {seed}", flush=True)
                recs.append(run_one(method, cc, dataset, seed, device))
            accs = [r["test_accuracy"] for r in recs]
            row = _row(dataset, method, "ok", cc)
            row.update(
                seeds=len(recs),
                test_accuracy=_mean(accs),
                test_accuracy_std=statistics.stdev(accs) if len(accs) > 1 else None,
                params=recs[0]["params"],
                flops_per_image=recs[0]["flops_per_image"],
                pixels_per_image=recs[0]["pixels_per_image"],
                train_seconds=_mean([r["train_seconds"] or 0.0 for r in recs]),
                images_per_s=_mean([r["images_per_s"] for r in recs]),
                runs=recs,
            )
            rows.append(row)
    write_outputs(rows, out, cc)
    return rows


# --------------------------------------------------------------------------- outputs

CSV_FIELDS = (
    "dataset",
    "method",
    "kind",
    "status",
    "seeds",
    "test_accuracy",
    "test_accuracy_std",
    "params",
    "flops_per_image",
    "pixels_per_image",
    "train_seconds",
    "images_per_s",
    "budget",
)


def _si(x: float | None) -> str:
    if x is None:
        return ""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def markdown_table(rows: Sequence[dict[str, Any]], cc: CompareConfig) -> str:
    """The comparison as Markdown: one table of measured rows, then the missing ones."""
    seeds = " ".join(map(str, cc.seeds))
    lines = [
        "| dataset | method | kind | test accuracy (%) | params | FLOPs / image "
        "| pixels seen / image | train time (s) | inference images/s | budget |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["status"] != "ok":
            continue
        acc = f"{100 * r['test_accuracy']:.2f}"
        if r["test_accuracy_std"] is not None:
            acc += f" ± {100 * r['test_accuracy_std']:.2f}"
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['kind']} | {acc} | {_si(r['params'])} "
            f"| {_si(r['flops_per_image'])} | {r['pixels_per_image']:,} "
            f"| {r['train_seconds']:.1f} | {r['images_per_s']:.0f} | {r['budget']} |"
        )
    other = [r for r in rows if r["status"] != "ok"]
    text = "\n".join(lines) + "\n"
    text += (
        f"\nSeeds: {seeds} (accuracy: mean ± sample std over seeds when more than one). "
        "FLOPs counted with torch's FlopCounterMode on a real forward pass (hard agents: "
        "the whole episode, all glimpse steps; the retina's grid_sample counts 0). "
        "Pixels seen: steps x scales x g^2 (+ the context view for DRAM) for hard agents, "
        "H x W for soft models (lowres-cnn: its downsampled H' x W').\n"
    )
    if other:
        text += "\n| dataset | method | status |\n|---|---|---|\n"
        text += "".join(f"| {r['dataset']} | {r['method']} | {r['status']} |\n" for r in other)
    return text


def _plot(rows: Sequence[dict[str, Any]], key: str, xlabel: str, logx: bool, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "ok"]
    datasets = list(dict.fromkeys(r["dataset"] for r in done)) or ["(no finished runs)"]
    fig, axes = plt.subplots(
        1, len(datasets), figsize=(5.5 * len(datasets), 4.5), squeeze=False, layout="constrained"
    )
    for ax, ds in zip(axes[0], datasets, strict=True):
        for kind, marker, color in (("hard", "o", "tab:red"), ("soft", "s", "tab:blue")):
            pts = [r for r in done if r["dataset"] == ds and r["kind"] == kind]
            if not pts:
                continue
            xs = [r[key] for r in pts]
            ys = [100 * r["test_accuracy"] for r in pts]
            errs = [100 * (r["test_accuracy_std"] or 0.0) for r in pts]
            ax.errorbar(xs, ys, yerr=errs, fmt=marker, color=color, label=kind, capsize=3)
            for r, x, y in zip(pts, xs, ys, strict=True):
                ax.annotate(
                    r["method"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
        if logx:
            ax.set_xscale("log")
        ax.set_title(ds)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def write_outputs(rows: Sequence[dict[str, Any]], out: Path, cc: CompareConfig) -> None:
    """``results.{md,csv,json}`` and the two PNG plots in ``out`` (each written atomically)."""
    out = Path(out)
    md = markdown_table(rows, cc)
    atomic_write(out / "results.md", lambda f: f.write(md.encode()))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r[k] is None else r[k]) for k in CSV_FIELDS})
    atomic_write(out / "results.csv", lambda f: f.write(buf.getvalue().encode()))
    config = {f.name: getattr(cc, f.name) for f in fields(cc)}
    write_json(out / "results.json", {"config": config, "rows": list(rows)})
    _plot(rows, "pixels_per_image", "pixels seen per image", False, out / "accuracy_vs_pixels.png")
    _plot(rows, "flops_per_image", "FLOPs per image (counted)", True, out / "accuracy_vs_flops.png")


_MERGE_FREE = {"datasets", "methods", "out", "merge", "threads", "device", "data_root", "quick"}
"""Config fields that may differ between merged comparisons (what ran, where, how fast)."""


def merge_comparisons(folders: Sequence[str | Path], out: str | Path) -> list[dict[str, Any]]:
    """One table and one pair of plots in ``out`` from several finished comparisons (e.g.
    datasets run in separate processes or on separate machines): the rows of each folder's
    ``results.json``, in the order given. The budgets must agree (every config field but
    the datasets, methods, and where and how it ran), a (dataset, method) pair may appear
    only once, and ``out`` must not be one of the folders. Returns the merged rows."""
    if not folders:
        raise ValueError("merge needs at least one comparison folder")
    out = Path(out)
    configs, rows, seen = [], [], {}
    for folder in map(Path, folders):
        if folder.resolve() == out.resolve():
            raise ValueError(f"--out {out} is one of the merged folders: its results would be lost")
        path = folder / "results.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"no results.json in {folder}: finish `scripts/compare.py --out {folder}` first"
            )
        data = read_json(path)
        ref = configs[0][1] if configs else data["config"]
        keys = (set(ref) | set(data["config"])) - _MERGE_FREE
        diff = sorted(k for k in keys if ref.get(k) != data["config"].get(k))
        if diff:
            first = configs[0][0] if configs else folder
            detail = ", ".join(f"{k}: {ref.get(k)!r} vs {data['config'].get(k)!r}" for k in diff)
            raise ValueError(f"{first} and {folder} were run with other budgets ({detail})")
        configs.append((folder, data["config"]))
        for r in data["rows"]:
            pair = (r["dataset"], r["method"])
            if pair in seen:
                raise ValueError(f"{pair[1]} on {pair[0]} is in both {seen[pair]} and {folder}")
            seen[pair] = folder
            rows.append(r)
    known = {f.name for f in fields(CompareConfig)}
    cc = CompareConfig(**{k: v for k, v in configs[0][1].items() if k in known})
    cc.datasets = tuple(dict.fromkeys(d for _, c in configs for d in c["datasets"]))
    cc.methods = tuple(dict.fromkeys(m for _, c in configs for m in c["methods"]))
    cc.out, cc.merge = str(out), tuple(map(str, folders))
    write_outputs(rows, out, cc)
    return rows


def format_summary(rows: Sequence[dict[str, Any]]) -> str:
    """A one-line-per-row console summary."""
    lines = []
    for r in rows:
        acc = "" if r["test_accuracy"] is None else f"{100 * r['test_accuracy']:.2f}%"
        lines.append(f"{r['dataset']:>12} {r['method']:>12} {acc:>8}  {r['status']}")
    return "\n".join(lines)
