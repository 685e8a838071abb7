"""Shared training plumbing for every trainer (RAM, DRAM, PPO, soft baselines).

- :func:`parse_config`: a config dataclass (one docstring per field) -> command line (tyro).
- :class:`Run`: ``runs/<run_name>/`` with ``config.json``, TensorBoard events, atomic
  checkpoints (``last.pt``, ``best.pt``, loaded with ``weights_only=True``) and metrics JSON.
- :func:`seed_everything`, :func:`resolve_device`, :func:`progress`.
- :func:`batches_per_epoch`, :func:`lr_scheduler`, :func:`checkpoint_state` /
  :func:`restore_checkpoint_state` and :meth:`Run.resume_state`: the epoch/schedule/resume
  bookkeeping every epoch-based trainer repeats.

Logging tags are namespaced ``train/…``, ``eval/…``, ``losses/…``, ``charts/…``; each
trainer documents the global step it uses.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from glimpse.io import atomic_write

T = TypeVar("T")

__all__ = [
    "Run",
    "RunConfig",
    "RunExistsError",
    "batches_per_epoch",
    "checkpoint_state",
    "config_to_dict",
    "lr_scheduler",
    "parse_config",
    "progress",
    "resolve_device",
    "restore_checkpoint_state",
    "rng_state",
    "seed_everything",
    "set_rng_state",
]


def parse_config(
    cls: type[T],
    args: list[str] | None = None,
    description: str | None = None,
    default: T | None = None,
) -> T:
    """Parse the command line into the dataclass ``cls`` (fields become ``--flags``);
    ``default`` is an instance whose values replace the class defaults."""
    import tyro

    return tyro.cli(cls, args=args, description=description, default=default)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; paths become strings."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}


def cli_main(main: Callable[[], Any]) -> None:
    """Run a script's ``main`` and turn the errors a user can fix (a bad value, a missing
    file, an existing run folder: ``ValueError``, ``FileNotFoundError``,
    ``FileExistsError``) into one line ``error: <message>`` on stderr and exit status 1,
    instead of a traceback. Set ``GLIMPSE_TRACEBACK=1`` to see the traceback.

    Under ``torchrun``, once ``main`` has returned and the process group is gone, the
    process flushes its streams and leaves without interpreter finalisation
    (:func:`exit_after_torchrun`)."""
    try:
        main()
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        if os.environ.get("GLIMPSE_TRACEBACK"):
            raise
        sys.exit(f"error: {err}")
    exit_after_torchrun()


def exit_after_torchrun() -> None:
    """In a ``torchrun`` worker whose work is done (its process group destroyed), flush
    stdout/stderr and end the process with ``os._exit(0)``; no-op otherwise.

    Why: with gloo, a worker occasionally aborts *after* its last line of Python, during
    interpreter finalisation ("terminate called without an active exception", SIGABRT, no
    Python frame; 3 of 15 two-rank ``train_parts.py`` runs on a loaded 2-core machine,
    torch 2.14.1), although every collective and every file write had completed. torchrun
    then reports the run as failed and SIGTERMs the other rank, possibly mid-write. All
    files here are closed before this point (runs close their writers and write
    atomically), so skipping finalisation loses nothing."""
    from glimpse import distributed

    if not distributed.launched() or distributed.active():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 -- seeds the legacy global RNG others use
    torch.manual_seed(seed)


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; otherwise the named device, checked."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"unknown device {spec!r}; expected 'auto', 'cpu' or 'cuda[:N]'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available; use 'cpu'")
    return device


@dataclass
class RunConfig:
    """Fields every trainer shares: data split, evaluation, seed, device, run folder."""

    val_size: int = 5000
    """Images held out from the official training set for validation."""
    eval_batch_size: int = 1000
    """Images per evaluation batch."""
    max_batches_per_epoch: int = 0
    """Cap on training batches per epoch (0: a full pass); for smoke runs."""
    seed: int = 0
    """Seed for weights, data order and sampling."""
    device: str = "auto"
    """'auto' (CUDA if available), 'cpu' or 'cuda[:N]'."""
    threads: int = 0
    """PyTorch CPU threads (0: PyTorch's default; 1 is often faster on a busy small machine)."""
    data_root: str | None = None
    """Folder holding MNIST/raw (default: $GLIMPSE_DATA, else ./data)."""
    download: bool = False
    """Download MNIST into data_root if missing (needs internet)."""
    run_name: str | None = None
    """Run folder name under runs_root (default: <model>-<dataset>-s<seed>-<unix time>)."""
    runs_root: str = "runs"
    """Parent folder of run folders."""
    resume: bool = False
    """Continue the run in runs_root/run_name from its last checkpoint."""
    log_every: int = 50
    """Log training scalars every this many batches."""

    def setup(self) -> torch.device:
        """Apply ``threads`` and ``seed``; return the resolved device."""
        device = resolve_device(self.device)
        if self.threads:
            torch.set_num_threads(self.threads)
        seed_everything(self.seed)
        return device


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", **kw) -> Iterator[T]:
    """A tqdm progress bar (silent when stderr is not a terminal, e.g. in CI logs, and on
    every rank but 0 of a ``torchrun`` job)."""
    from tqdm.auto import tqdm

    disable = kw.pop("disable", True if os.environ.get("RANK", "0") != "0" else None)
    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, disable=disable, **kw)


def batches_per_epoch(num_items: int, batch_size: int, cap: int = 0) -> int:
    """Full batches in one pass over ``num_items`` items, at most ``cap`` (0: no cap).

    Raises ``ValueError`` when not even one batch fits.
    """
    if batch_size < 1 or cap < 0:
        raise ValueError(f"need batch_size >= 1 and cap >= 0, got {batch_size} and {cap}")
    n = num_items // batch_size
    if n < 1:
        raise ValueError(f"batch_size {batch_size} exceeds the training split ({num_items} items)")
    return min(n, cap) if cap else n


def lr_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-batch learning-rate schedule called ``schedule``.

    ``"cosine"``: cosine annealing from the initial rate to 0 over ``total_steps`` steps;
    ``"constant"``: the initial rate throughout.
    """
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"unknown lr schedule {schedule!r}; valid: cosine, constant")


def checkpoint_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    **extra: Any,
) -> dict[str, Any]:
    """A resumable training state: model, optimizer, scheduler and RNG states, plus
    ``extra`` (epoch, global step, best score, data-order state, ...)."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        **extra,
    }


def restore_checkpoint_state(
    state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """Load what :func:`checkpoint_state` saved into the given objects and restore the RNG
    states; return ``state`` so the caller can read its extras."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state


class RunExistsError(FileExistsError):
    """The run folder already holds a run and neither resume nor overwrite was asked for."""


class Run:
    """One training run's folder ``<root>/<name>/`` and its TensorBoard writer.

    Args:
        name: run name (folder name).
        config: the resolved config dataclass; saved as ``config.json``.
        root: parent folder (default ``runs``).
        resume: allow an existing folder and continue from its ``last.pt``.
        enabled: ``False`` on non-zero ranks of a distributed job: nothing is written.
    """

    def __init__(
        self,
        name: str,
        config: Any,
        root: str | os.PathLike[str] = "runs",
        resume: bool = False,
        enabled: bool = True,
    ) -> None:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"run name must be a plain folder name, got {name!r}")
        self.dir = Path(root) / name
        self.enabled = enabled
        self.resume = resume
        self.config = config
        self._writer = None
        if not enabled:
            return
        if self.dir.exists() and any(self.dir.iterdir()) and not resume:
            raise RunExistsError(
                f"run folder {self.dir} already exists; pass --resume to continue it or "
                "choose another --run-name"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(config_to_dict(config), indent=2, sort_keys=True)
        atomic_write(self.dir / "config.json", lambda f: f.write(text.encode() + b"\n"))

    @property
    def writer(self):
        """The run's ``torch.utils.tensorboard.SummaryWriter`` (created on first use)."""
        if self._writer is None and self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.dir))
        return self._writer

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        """Write each ``tag: value`` at ``step``."""
        if not self.enabled:
            return
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)

    def log_hparams(self) -> None:
        """The config as a Markdown table under the ``hparams`` text tag (written once)."""
        if not self.enabled:
            return
        rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(config_to_dict(self.config).items()))
        self.writer.add_text("hparams", "| parameter | value |\n|---|---|\n" + rows, 0)

    def checkpoint_path(self, name: str = "last") -> Path:
        return self.dir / f"{name}.pt"

    def save_checkpoint(self, state: dict[str, Any], name: str = "last") -> Path | None:
        """Atomically save ``state`` (tensors, numbers, strings, dicts/lists of them)."""
        if not self.enabled:
            return None
        state = dict(state, config=json.dumps(config_to_dict(self.config), sort_keys=True))
        return atomic_write(self.checkpoint_path(name), lambda f: torch.save(state, f))

    def load_checkpoint(
        self, name: str = "last", map_location: torch.device | str = "cpu"
    ) -> dict[str, Any] | None:
        """The saved state, or ``None`` if there is none (``weights_only=True``)."""
        path = self.checkpoint_path(name)
        if not path.exists():
            return None
        return load_checkpoint(path, map_location)

    def resume_state(self, map_location: torch.device | str = "cpu") -> dict[str, Any] | None:
        """``last.pt`` when the run was opened with ``resume=True``, else ``None``.

        Raises ``FileNotFoundError`` when resuming was asked for but there is no ``last.pt``.
        """
        if not self.resume:
            return None
        state = self.load_checkpoint("last", map_location)
        if state is None:
            raise FileNotFoundError(
                f"--resume given but {self.checkpoint_path('last')} does not exist"
            )
        return state

    def write_json(self, name: str, data: dict[str, Any]) -> Path | None:
        """Write ``data`` as ``<run>/<name>`` atomically (e.g. final test metrics)."""
        if not self.enabled:
            return None
        text = json.dumps(data, indent=2, sort_keys=True)
        return atomic_write(self.dir / name, lambda f: f.write(text.encode() + b"\n"))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def load_checkpoint(
    path: str | os.PathLike[str], map_location: torch.device | str = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint written by :meth:`Run.save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt or foreign file: say which, not torch's internals
        raise ValueError(f"could not load checkpoint {path}: {err}") from None


def load_weights(
    model: torch.nn.Module, source: str | os.PathLike[str], map_location: torch.device | str = "cpu"
) -> Path:
    """Warm start: load the weights of a checkpoint into ``model`` (nothing else: the
    optimizer, schedule and counters start afresh). ``source`` is a ``.pt`` file written by
    :meth:`Run.save_checkpoint` or a run folder, whose ``best.pt`` is used. Returns the file
    read.

    Raises:
        FileNotFoundError: no such file, or a run folder without ``best.pt``.
        ValueError: the checkpoint's weights do not fit ``model`` (the differing parameter
            names and shapes are listed), or the file is not a checkpoint.
    """
    path = Path(source)
    if path.is_dir():
        path = path / "best.pt"
    state = load_checkpoint(path, map_location)
    weights = state.get("model") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise ValueError(f"{path} is not a training checkpoint (it has no 'model' weights)")
    own = model.state_dict()
    problems = [f"missing {k}" for k in own if k not in weights]
    problems += [f"unexpected {k}" for k in weights if k not in own]
    problems += [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in weights.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if problems:
        shown = "; ".join(problems[:6]) + ("; ..." if len(problems) > 6 else "")
        raise ValueError(
            f"the weights in {path} do not fit this model ({len(problems)} differences: "
            f"{shown}); build the model with the checkpoint's config"
        )
    model.load_state_dict(weights)
    return path


def rng_state() -> dict[str, Any]:
    """Torch (CPU, CUDA) RNG states as tensors, for checkpoints."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
