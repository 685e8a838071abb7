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
import math
import os
import pickle
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union

import torch

from glimpse import distributed
from glimpse.io import atomic_write, read_json, write_json
from glimpse.rng import rng_state, seed_everything, set_rng_state

T = TypeVar("T")

__all__ = [
    "Run",
    "RunConfig",
    "RunExistsError",
    "batches_per_epoch",
    "check_config",
    "checkpoint_state",
    "config_to_dict",
    "load_run_config",
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
    ``default`` is an instance whose values replace the class defaults.

    The result is checked (:func:`check_config`: one ``ValueError`` line naming the bad
    field and value), a relative ``--data-root`` (or ``$GLIMPSE_DATA``) becomes absolute,
    so the config means the same from any working directory, in subprocesses and under
    torchrun. With ``--resume`` of a started run (one with ``last.pt``), the run's own
    ``config.json`` is the config (:func:`resume_config`).
    """
    import tyro

    cfg = tyro.cli(cls, args=args, description=description, default=default)
    cfg = _absolute_data_root(cfg)
    if getattr(cfg, "resume", False):
        cfg = resume_config(cfg, lambda saved: tyro.cli(cls, args=args, default=saved))
    check_config(cfg)
    return cfg


def _absolute_data_root(cfg: T) -> T:
    """``cfg`` with ``data_root`` (else ``$GLIMPSE_DATA`` when set) made absolute."""
    if not dataclasses.is_dataclass(cfg) or not hasattr(cfg, "data_root"):
        return cfg
    root = cfg.data_root if cfg.data_root is not None else os.environ.get("GLIMPSE_DATA")
    if not root:
        return cfg
    return dataclasses.replace(cfg, data_root=str(Path(root).expanduser().absolute()))


# ----------------------------------------------------------------------- config checks

Rule = tuple[str, float] | tuple[str, float, float]
"""A bound on a numeric config field: ``(">", 0)``, ``(">=", 1)``, ``("[]", 0, 1)``
(closed interval), ``("(]", 0, 1)`` or ``("()", 0, 1)`` (open ends)."""


def _rules_of(cls: type) -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for klass in reversed(cls.__mro__):
        rules.update(vars(klass).get("RULES", {}))
    return rules


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _rule_holds(rule: Rule, x: float) -> bool:
    op, lo = rule[0], rule[1]
    if op == ">":
        return x > lo
    if op == ">=":
        return x >= lo
    hi = rule[2]  # type: ignore[misc]
    left = x >= lo if op[0] == "[" else x > lo
    right = x <= hi if op[1] == "]" else x < hi
    return left and right


def _rule_text(rule: Rule) -> str:
    if rule[0] in (">", ">="):
        return f"{rule[0]} {rule[1]:g}"
    return f"in {rule[0][0]}{rule[1]:g}, {rule[2]:g}{rule[0][1]}"  # type: ignore[misc]


def check_config(cfg: Any) -> None:
    """Check every numeric field of the config dataclass ``cfg``: floats must be finite,
    and a field named in the class's ``RULES`` (merged over its bases) must satisfy its
    bound (elements of a tuple field each); ``run_name``, when set, must be a plain folder
    name. ``None`` means "unset" and is always allowed; ``0`` is a value like any other.

    Raises ``ValueError`` with one line naming the flag, the bound and the value.
    """
    if not dataclasses.is_dataclass(cfg):
        return
    rules = _rules_of(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        items = value if isinstance(value, (tuple, list)) else (value,)
        for x in items:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                continue
            if isinstance(x, float) and not math.isfinite(x):
                raise ValueError(f"{_flag(f.name)} must be a finite number, got {value!r}")
            rule = rules.get(f.name)
            if rule is not None and not _rule_holds(rule, x):
                raise ValueError(f"{_flag(f.name)} must be {_rule_text(rule)}, got {value!r}")
    name = getattr(cfg, "run_name", None)
    if name is not None:
        check_run_name(name)


def check_run_name(name: Any) -> None:
    """A run name is a plain, non-empty folder name (no ``/``, not ``.``/``..``)."""
    if not isinstance(name, str) or not name.strip() or "/" in name or name in (".", ".."):
        raise ValueError(f"--run-name must be a plain folder name, got {name!r}")


# ------------------------------------------------------------------ config.json and resume

MACHINE_FIELDS = frozenset({"resume", "threads", "device", "data_root", "runs_root", "download"})
"""Fields that describe where a run executes, not what it computes: on ``--resume`` they
come from the new command line (the data may live elsewhere on a new machine)."""


def _value_error(path: Path, name: str, value: Any, expected: str) -> ValueError:
    return ValueError(f"{path}: field {name!r} is {value!r}, expected {expected}")


def _coerce(hint: Any, value: Any) -> tuple[bool, Any]:
    """``(ok, value)``: ``value`` (read from JSON) as type ``hint``, lists as tuples."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True, value
    if origin in (Union, types.UnionType):
        for arm in typing.get_args(hint):
            ok, v = _coerce(arm, value)
            if ok:
                return True, v
        return False, value
    if hint is type(None):
        return value is None, value
    if origin is Literal:
        return value in typing.get_args(hint), value
    if origin in (tuple, list):
        if not isinstance(value, list):
            return False, value
        args = [a for a in typing.get_args(hint) if a is not Ellipsis] or [Any]
        out = []
        for x in value:
            ok, v = _coerce(args[0], x)
            if not ok:
                return False, value
            out.append(v)
        return True, tuple(out) if origin is tuple else out
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint in (str, Path):
        return isinstance(value, str), value
    return True, value


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def load_run_config(
    run_dir: str | os.PathLike[str], cls: type[T], ignore_unknown: bool = False
) -> T:
    """The config dataclass ``cls`` saved in ``run_dir/config.json``, type- and
    range-checked (:func:`check_config`); ``ignore_unknown``: skip fields ``cls`` does not
    have (a subclass's config read as its base), instead of refusing them.

    Raises:
        FileNotFoundError: no ``config.json`` in ``run_dir``.
        ValueError: one line naming the file and the field, for a file that is not JSON,
            an unknown field or a value of the wrong type or out of range.
    """
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a run folder")
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, expected a JSON object")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for name, raw in data.items():
        if name not in known:
            if ignore_unknown:
                continue
            raise ValueError(
                f"{path}: unknown field {name!r} (not a field of {cls.__name__}; valid: "
                f"{', '.join(sorted(known))})"
            )
        ok, value = _coerce(hints[name], raw)
        if not ok:
            raise _value_error(path, name, raw, _type_name(hints[name]))
        values[name] = value
    try:
        cfg = cls(**values)
        check_config(cfg)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None
    return cfg


def resume_config(cfg: T, reparse: Callable[[T], T] | None = None) -> T:
    """The config of ``--resume`` for a started run: the run's own ``config.json``.

    ``reparse(saved)`` parses the command line again with ``saved`` as the defaults, so
    flags that were not given take the run's values and flags that were given can be
    compared with them (without it, ``cfg`` itself is compared). A differing field must
    be a machine field (:data:`MACHINE_FIELDS`, taken from the command line) or one of the
    class's ``RESUMABLE`` fields, which may only grow (``epochs``: the schedule is
    stretched to the new length, :func:`restore_checkpoint_state`); anything else is a
    ``ValueError`` naming every differing field with both values. A run folder without
    ``last.pt`` has not started: ``cfg`` is returned unchanged (it starts afresh).
    """
    name = getattr(cfg, "run_name", None)
    if not name:
        raise ValueError("--resume needs --run-name NAME (the run folder to continue)")
    check_run_name(name)
    run_dir = Path(cfg.runs_root) / name
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"--resume: there is no run folder {run_dir} to continue (run without --resume "
            "to start it)"
        )
    if not (run_dir / "last.pt").is_file():
        return cfg
    saved = load_run_config(run_dir, type(cfg))
    machine = {k: getattr(cfg, k) for k in MACHINE_FIELDS if hasattr(cfg, k)}
    saved = dataclasses.replace(saved, **machine)
    new = _absolute_data_root(reparse(saved)) if reparse is not None else cfg
    check_resume_compatible(run_dir, saved, new)
    return dataclasses.replace(new, **machine)


def check_resume_compatible(run_dir: Path, saved: Any, new: Any) -> None:
    """Raise ``ValueError`` (one line, every differing field with both values) unless
    ``new`` differs from ``saved`` only in machine fields and growing ``RESUMABLE`` ones."""
    resumable = set(getattr(type(new), "RESUMABLE", ()))
    a, b = config_to_dict(saved), config_to_dict(new)
    bad = []
    for k in sorted(set(a) | set(b)):
        if k in MACHINE_FIELDS or a.get(k) == b.get(k):
            continue
        grows = isinstance(a.get(k), int) and isinstance(b.get(k), int) and b[k] > a[k]
        if k in resumable and grows:
            continue
        note = " (it may only grow)" if k in resumable else ""
        bad.append(f"{_flag(k)} {b.get(k)!r} given, the run has {a.get(k)!r}{note}")
    if bad:
        ok = ", ".join(_flag(k) for k in sorted(resumable)) or "none"
        raise ValueError(
            f"--resume {run_dir}: the command line differs from its config.json: "
            f"{'; '.join(bad)} (resumable overrides: {ok}); nothing was changed"
        )


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
    if not distributed.launched() or distributed.active():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


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
    precision: Literal["fp32", "bf16"] = "fp32"
    """``bf16``: bfloat16 autocast of every forward pass with fp32 master weights
    (:mod:`glimpse.precision`), where the device has native bf16 (else fp32, said in one
    line). Default fp32, by measurement on an AVX512-BF16 CPU (docs/BENCHMARKS.md,
    docs/RESULTS.md): bf16 trains the soft CNNs 2.2x faster at 60x60 but RAM only 1.09x,
    and RAM's default run lost accuracy in bf16 (1.82% against 1.25%)."""
    patience: int = 0
    """Stop once this many validations in a row have not improved on the best validation
    accuracy (0: train the whole budget). The learning-rate schedule stays that of the whole
    budget; ``metrics.json`` records ``stopped`` (``patience`` or ``budget``)."""

    RULES: ClassVar[dict[str, Rule]] = {
        "val_size": (">=", 0),
        "eval_batch_size": (">=", 1),
        "max_batches_per_epoch": (">=", 0),
        "seed": (">=", 0),
        "threads": (">=", 0),
        "log_every": (">=", 1),
        "patience": (">=", 0),
    }
    """Bounds of the numeric fields (:func:`check_config`); subclasses add theirs."""
    RESUMABLE: ClassVar[tuple[str, ...]] = ()
    """Fields a ``--resume`` may change (growing only), besides :data:`MACHINE_FIELDS`."""

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
    states; return ``state`` so the caller can read its extras.

    A cosine ``scheduler`` built for a longer run than the checkpoint's (``--resume
    --epochs N`` with more epochs) keeps its new length: the cosine is stretched over the
    new total and the learning rate continues from the stretched curve's value at the
    step reached. Weights that do not fit ``model`` raise one ``ValueError`` line.
    """
    new_total = getattr(scheduler, "T_max", None)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        first = _first_line(err).rstrip(":")
        raise ValueError(
            f"the checkpoint's weights do not fit the model built from the config ({first}); "
            "was config.json edited?"
        ) from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR) and new_total:
        done = scheduler.last_epoch
        if new_total < done:
            raise ValueError(
                f"the run has taken {done} scheduled steps, more than the {new_total} of "
                "the requested length; resume with at least its epochs"
            )
        if new_total != scheduler.T_max:
            scheduler.T_max = new_total
            lrs = []
            for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
                eta = scheduler.eta_min
                group["lr"] = eta + (base - eta) * (1 + math.cos(math.pi * done / new_total)) / 2
                lrs.append(group["lr"])
            scheduler._last_lr = lrs
    set_rng_state(state["rng"])
    return state


_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{16}\.tmp")
"""Names of :func:`glimpse.io.atomic_write`'s temporary files."""


class RunExistsError(FileExistsError):
    """The run folder already holds a run and neither resume nor overwrite was asked for."""


class Run:
    """One training run's folder ``<root>/<name>/`` and its TensorBoard writer.

    A folder holding ``last.pt`` is a started run: it is only reopened with ``resume``,
    and then the config must agree with its ``config.json``
    (:func:`check_resume_compatible`). A folder without ``last.pt`` (a start that failed
    before its first checkpoint) counts as not started and is reused. Opening a run
    writes nothing: the folder and ``config.json`` appear with the first checkpoint,
    metrics file or TensorBoard event, so a start that fails on bad input leaves no trace.
    Temporary files left by a killed checkpoint write are removed.

    Args:
        name: run name (folder name).
        config: the resolved config dataclass; saved as ``config.json``.
        root: parent folder (default ``runs``).
        resume: continue from the folder's ``last.pt``; the folder must exist.
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
        check_run_name(name)
        self.dir = Path(root) / name
        self.enabled = enabled
        self.config = config
        self._writer = None
        self._config_written = False
        started = self.checkpoint_path("last").is_file()
        self.resume = resume and started
        if not enabled:
            return
        if resume and not self.dir.is_dir():
            raise FileNotFoundError(
                f"--resume: there is no run folder {self.dir} to continue (run without "
                "--resume to start it)"
            )
        if started and not resume:
            raise RunExistsError(
                f"run folder {self.dir} already exists; pass --resume to continue it or "
                "choose another --run-name"
            )
        if self.resume and dataclasses.is_dataclass(config):
            saved = load_run_config(self.dir, type(config))
            check_resume_compatible(self.dir, saved, config)
        for tmp in self.dir.glob(".*.tmp") if self.dir.is_dir() else ():
            if _TEMP_NAME.fullmatch(tmp.name):  # an atomic write killed mid-way
                tmp.unlink(missing_ok=True)

    def _write_config(self) -> None:
        """Write ``config.json`` (atomically) once per session, before the first file."""
        if self._config_written or not self.enabled:
            return
        write_json(self.dir / "config.json", config_to_dict(self.config))
        self._config_written = True

    @property
    def writer(self):
        """The run's ``torch.utils.tensorboard.SummaryWriter`` (created on first use)."""
        if self._writer is None and self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._write_config()
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
        self._write_config()
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
        """``last.pt`` when the run was opened with ``resume=True`` and has started, else
        ``None`` (a fresh start)."""
        if not self.resume:
            return None
        return self.load_checkpoint("last", map_location)

    def write_json(self, name: str, data: dict[str, Any]) -> Path | None:
        """Write ``data`` as ``<run>/<name>`` atomically (e.g. final test metrics)."""
        if not self.enabled:
            return None
        self._write_config()
        return write_json(self.dir / name, data)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def load_checkpoint(
    path: str | os.PathLike[str], map_location: torch.device | str = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint written by :meth:`Run.save_checkpoint` (``weights_only=True``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (one line naming
    the file and what is wrong) for an empty, truncated or foreign one; a file that holds
    arbitrary Python objects is refused, never executed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"could not load checkpoint {path}: the file is empty (0 bytes)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise ValueError(
                f"{path} is not a Glimpse checkpoint (it holds Python objects other than "
                "tensors and plain values) and was not loaded"
            ) from None
        raise ValueError(f"could not load checkpoint {path}: {_first_line(err)}") from None
    except Exception as err:  # corrupt or foreign file: say which, not torch's internals
        reason = _first_line(err) or type(err).__name__
        raise ValueError(
            f"could not load checkpoint {path} ({size} bytes, truncated or not a torch "
            f"file): {reason}"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(
            f"{path} is not a Glimpse checkpoint (it holds a {type(state).__name__}, "
            "expected a dict)"
        )
    return state


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


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
