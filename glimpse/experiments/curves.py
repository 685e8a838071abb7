"""Learning curves of hard-attention runs from their TensorBoard events: accuracy vs
environment steps and vs wall time (PNG), and a Markdown table at fixed step budgets.
The library side of ``scripts/plot_curves.py``.

Reads ``eval/accuracy`` (validation accuracy) from each ``runs/<run_name>/`` folder and
puts every run on one x axis, **environment steps** (glimpses taken, summed over all
episodes):

- PPO runs (:mod:`agents.ppo_train`; their ``config.json`` has ``algo``) already step
  their tags by env steps.
- REINFORCE runs (:mod:`agents.train`) step by training *episodes*; they are converted
  with ``env steps = episodes * num_glimpses * num_targets`` (``num_glimpses`` from the
  run's ``config.json``; ``num_targets`` of its task in :mod:`glimpse.tasks`, 1 if the
  task is not there). Every REINFORCE episode
  lasts exactly that many steps, so the conversion is exact.

Wall time: ``charts/elapsed_s`` where the run logs it (PPO runs: training plus evaluation
seconds, summed over resumed sessions); otherwise (REINFORCE runs) the event's wall clock
minus that of the run's first event (the ``hparams`` text, written just before training
starts), which also counts evaluation time and, for resumed runs, any pause between
sessions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from glimpse.io import read_json
from glimpse.tasks import TASKS

__all__ = [
    "Curve",
    "CurvesConfig",
    "accuracy_table",
    "plot_compute_curves",
    "plot_curves",
    "read_curve",
    "read_history",
    "run_curves",
]


@dataclass
class Curve:
    """One run's validation-accuracy curve."""

    name: str
    algo: str
    """``reinforce``, ``ppo-hybrid`` or ``sb3-recurrent-ppo``."""
    env_steps: np.ndarray
    """Environment steps (glimpses) at each evaluation."""
    seconds: np.ndarray
    """Wall seconds since the start of training at each evaluation."""
    accuracy: np.ndarray
    """Validation accuracy at each evaluation."""


def _episode_steps(config: dict) -> int:
    if not config.get("num_glimpses"):
        raise ValueError(f"config.json lacks num_glimpses: {sorted(config)}")
    task = TASKS.get(config.get("task", ""))
    return int(config["num_glimpses"]) * (1 if task is None else task.num_targets)


def read_curve(run_dir: str | Path, name: str | None = None, tag: str = "eval/accuracy") -> Curve:
    """The ``tag`` curve of the run in ``run_dir`` on the env-step axis (module docstring)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: no config.json")
    config = read_json(cfg_path)
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    if tag not in tags["scalars"]:
        raise ValueError(f"{run_dir} has no {tag!r} scalars; it has {sorted(tags['scalars'])}")
    events = acc.Scalars(tag)
    steps = np.array([e.step for e in events], dtype=np.int64)
    values = np.array([e.value for e in events], dtype=np.float64)
    algo = config.get("algo", "reinforce")
    if algo == "reinforce":
        steps = steps * _episode_steps(config)
    if "charts/elapsed_s" in tags["scalars"]:
        by_step = {e.step: e.value for e in acc.Scalars("charts/elapsed_s")}
        seconds = np.array([by_step.get(e.step, np.nan) for e in events])
    else:
        firsts = [acc.Scalars(t)[0].wall_time for t in tags["scalars"]]
        firsts += [acc.Tensors(t)[0].wall_time for t in tags["tensors"]]
        seconds = np.array([e.wall_time for e in events]) - min(firsts)
    return Curve(name or run_dir.name, algo, steps, seconds, values)


def accuracy_table(curves: list[Curve], budgets: list[int], slack: float = 0.005) -> str:
    """Markdown: each run's validation accuracy at the last evaluation within each budget
    of env steps, and its wall time there (blank where the run had not been evaluated
    yet, or stopped before the budget). Evaluations up to ``slack`` (a fraction) past a
    budget count as within it: SB3 evaluates at the first vector step past its interval."""
    head = "| run | algorithm | " + " | ".join(f"≤ {b:,} steps" for b in budgets) + " |"
    rows = [head, "|---|---|" + "---|" * len(budgets)]
    for c in curves:
        cells = []
        for b in budgets:
            limit = b * (1 + slack)
            within = np.nonzero(c.env_steps <= limit)[0]
            if within.size == 0 or c.env_steps.max() < b * (1 - slack):
                cells.append("")  # not evaluated yet, or the run stopped short of b
                continue
            i = within[-1]
            cells.append(f"{c.accuracy[i]:.2%} ({c.seconds[i]:.0f} s)")
        rows.append(f"| {c.name} | {c.algo} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def plot_curves(curves: list[Curve], out_dir: str | Path, prefix: str = "curves") -> list[Path]:
    """Two PNGs in ``out_dir``: ``<prefix>_vs_steps.png`` and ``<prefix>_vs_time.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("no curves to plot")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, xlabel, attr in (
        ("steps", "environment steps (glimpses)", "env_steps"),
        ("time", "wall time (s)", "seconds"),
    ):
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
        for c in curves:
            ax.plot(getattr(c, attr), c.accuracy * 100, marker="o", ms=3, label=c.name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{prefix}_vs_{suffix}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


@dataclass
class CurvesConfig:
    """Plot validation accuracy vs env steps and vs wall time for several runs."""

    runs: tuple[str, ...] = ()
    """Run folders (runs/<run_name>) to read."""
    labels: tuple[str, ...] = ()
    """Legend names, one per run (default: the folder names)."""
    out_dir: str = "docs/img"
    """Folder for the PNGs."""
    prefix: str = "curves"
    """PNG names: <prefix>_vs_steps.png and <prefix>_vs_time.png."""
    budgets: tuple[int, ...] = field(default=(330_000, 660_000, 1_000_000, 1_650_000))
    """Env-step budgets of the Markdown table (one 28x28 MNIST epoch at batch 128 is
    329,472 env steps)."""

    table: str | None = None
    """Also write the Markdown table to this file (it is always printed)."""
    compute: bool = False
    """Instead: validation error against training FLOPs and wall time from the runs'
    ``metrics.json`` histories (:func:`plot_compute_curves`; issue 21): writes
    ``<prefix>_vs_flops.png`` and ``<prefix>_vs_time.png``."""

    RULES: ClassVar[dict[str, tuple]] = {"budgets": (">=", 1)}
    """Bounds of the numeric fields (:func:`glimpse.training.check_config`)."""


def run_curves(cfg: CurvesConfig) -> str:
    """Read the runs, write the PNGs, return (and optionally write) the Markdown table."""
    if not cfg.runs:
        raise ValueError("give at least one run folder (--runs runs/a runs/b ...)")
    if cfg.labels and len(cfg.labels) != len(cfg.runs):
        raise ValueError(f"got {len(cfg.labels)} labels for {len(cfg.runs)} runs")
    if cfg.compute:
        paths = plot_compute_curves(list(cfg.runs), cfg.out_dir, cfg.prefix)
        text = "\n".join(str(p) for p in paths)
        print(text, flush=True)
        return text
    names = cfg.labels or [None] * len(cfg.runs)
    curves = [read_curve(r, n) for r, n in zip(cfg.runs, names, strict=True)]
    paths = plot_curves(curves, cfg.out_dir, cfg.prefix)
    table = accuracy_table(curves, list(cfg.budgets))
    if cfg.table:
        Path(cfg.table).write_text(table)
    print(table + "\n" + "\n".join(str(p) for p in paths), flush=True)
    return table


# ------------------------------------------------- compute-to-accuracy (issue 21)
def read_history(run_dir: str | Path) -> dict[str, np.ndarray | str]:
    """A run's validations from its ``metrics.json`` (:mod:`glimpse.loop` records every
    validation in ``history``): ``val_error`` (fractions), ``train_flops`` (training FLOPs
    up to each validation: ``train_flops_per_update x updates``) and ``seconds`` (training
    wall seconds), with the run's ``method``, ``task`` and ``name``. Raises ``ValueError``
    for a run without a history (trained before it was recorded) or without FLOPs."""
    run_dir = Path(run_dir)
    metrics = read_json(run_dir / "metrics.json")
    history = metrics.get("history") or []
    if not history:
        raise ValueError(f"{run_dir}: metrics.json has no validation history (an older run)")
    per_update = metrics.get("train_flops_per_update")
    if per_update is None:
        raise ValueError(f"{run_dir}: metrics.json has no training FLOPs")
    return {
        "name": run_dir.name,
        "method": str(metrics["method"]),
        "task": str(metrics["task"]),
        "val_error": np.array([h["val_error"] for h in history], dtype=np.float64),
        "train_flops": np.array([h["updates"] * per_update for h in history], dtype=np.float64),
        "seconds": np.array([h["train_seconds"] for h in history], dtype=np.float64),
    }


def plot_compute_curves(run_dirs: list[str | Path], out_dir: str | Path, prefix: str) -> list[Path]:
    """Validation error against training FLOPs and against training wall time, one panel
    per task, one line per run (legend below the axes, log axes): two PNGs,
    ``<prefix>_vs_flops.png`` and ``<prefix>_vs_time.png`` in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not run_dirs:
        raise ValueError("no runs to plot")
    runs = [read_history(r) for r in run_dirs]
    tasks = sorted({str(r["task"]) for r in runs}, key=lambda t: (t not in TASKS, t))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, xlabel, suffix in (
        ("train_flops", "training FLOPs", "flops"),
        ("seconds", "training wall time (s)", "time"),
    ):
        fig, axes = plt.subplots(
            1, len(tasks), figsize=(5.6 * len(tasks), 5.0), dpi=110, squeeze=False
        )
        for ax, task in zip(axes[0], tasks, strict=True):
            for r in runs:
                if r["task"] == task:
                    ax.plot(r[key], 100 * r["val_error"], marker="o", ms=2, label=r["name"])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("validation error (%)")
            ax.set_title(task)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
        fig.tight_layout()
        path = out_dir / f"{prefix}_vs_{suffix}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
