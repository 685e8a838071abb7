"""Golden runs: one tiny, seeded, one-thread training per trainer, fingerprinted.

Issue 15 (one training loop) must not change what any trainer computes. Before the
refactor, :func:`record` ran every trainer here and stored its fingerprint in
``tests/reference/golden_runs.json``: a SHA-256 of the final (``last.pt``) and selected
(``best.pt``) weights and the numbers of its ``metrics.json``. The regression test
(``tests/test_glimpse_loop_golden.py``) reruns them and demands bit-identical weights and
equal numbers. Weights are only comparable between machines with the same torch build and
CPU kernels, so the file also stores both; elsewhere the test says why it cannot compare.

Record (only when a behaviour change is intended, and say so in the commit)::

    GLIMPSE_DATA=../shared/data python -m tests.reference.golden_runs
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

GOLDEN_FILE = Path(__file__).with_name("golden_runs.json")

# Quantities compared between the old and the new metrics schema: old key -> new key
# (``None``: the same key). Timing, machine and command fields are not compared.
COMPARED = {
    "test_error": None,
    "test_accuracy": None,
    "val_best_accuracy": None,
    "episodes_seen": "images_seen",
    "images_seen": None,
    "env_steps": None,
    "test_part_hit": None,
    "test_digits_covered": None,
    "protocols": None,
    "headline_protocol": "protocol",
    "params": None,
}


def _common(data_root: str, runs_root: str, name: str) -> dict[str, Any]:
    return {
        "data_root": data_root,
        "runs_root": runs_root,
        "run_name": name,
        "device": "cpu",
        "threads": 1,
        "seed": 0,
        "val_size": 500,
        "log_every": 1,
    }


def _hard(name: str, agent: str) -> Callable[[str, str], None]:
    def run(data_root: str, runs_root: str) -> None:
        from agents.config import HardTrainConfig
        from agents.train import train_reinforce

        train_reinforce(
            HardTrainConfig(
                **_common(data_root, runs_root, name),
                agent=agent,
                epochs=2,
                batch_size=32,
                max_batches_per_epoch=4,
                train_limit=1024,
                eval_limit=200,
                eval_batch_size=100,
                hidden=32,
                eval_seeds=2,
                mc_samples=2,
                playback=2,
            )
        )

    return run


def _ppo(name: str, algo: str) -> Callable[[str, str], None]:
    def run(data_root: str, runs_root: str) -> None:
        from agents.ppo_train import PPOTrainConfig, train_ppo

        train_ppo(
            PPOTrainConfig(
                **_common(data_root, runs_root, name),
                algo=algo,
                total_env_steps=6 * 32 * 4,
                eval_every_steps=6 * 32 * 2,
                batch_size=32,
                train_limit=1024,
                eval_limit=200,
                eval_batch_size=100,
                hidden=32,
                playback=2,
            )
        )

    return run


def _parts(data_root: str, runs_root: str) -> None:
    from agents.parts_train import PartsTrainConfig, train_parts

    train_parts(
        PartsTrainConfig(
            **_common(data_root, runs_root, "parts"),
            dataset="proxy",
            epochs=2,
            batch_size=16,
            max_batches_per_epoch=3,
            train_limit=256,
            eval_limit=64,
            eval_batch_size=32,
            playback=2,
        )
    )


def _soft(name: str, module: str) -> Callable[[str, str], None]:
    def run(data_root: str, runs_root: str) -> None:
        from soft_baselines.train import SoftTrainConfig, train_soft

        train_soft(
            SoftTrainConfig(
                **_common(data_root, runs_root, name),
                module=module,
                widths=(8, 16),
                insert_after=("stage2",),
                epochs=2,
                batch_size=32,
                max_batches_per_epoch=4,
                eval_batch_size=1000,
                log_images=2,
            )
        )

    return run


RUNS: dict[str, Callable[[str, str], None]] = {
    "ram": _hard("ram", "ram"),
    "dram": _hard("dram", "dram"),
    "ppo-hybrid": _ppo("ppo-hybrid", "ppo-hybrid"),
    "sb3-recurrent-ppo": _ppo("sb3-recurrent-ppo", "sb3-recurrent-ppo"),
    "parts": _parts,
    "soft-none": _soft("soft-none", "none"),
    "soft-stn": _soft("soft-stn", "stn"),
    "soft-se": _soft("soft-se", "se"),
}
"""Golden run name -> ``run(data_root, runs_root)`` training into ``runs_root/<name>``."""


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and bytes, in key order."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key]
        h.update(key.encode())
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy())
        else:
            h.update(repr(t).encode())
    return h.hexdigest()


def fingerprint(run_dir: Path) -> dict[str, Any]:
    """Weights digests of ``last.pt``/``best.pt`` and the compared numbers of a run."""
    out: dict[str, Any] = {}
    for which in ("last", "best"):
        ckpt = torch.load(run_dir / f"{which}.pt", map_location="cpu", weights_only=True)
        out[f"{which}_weights"] = weights_digest(ckpt["model"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    flat = {**metrics.get("details", {}), **metrics}  # trainer extras live under details
    names = {new or old for old, new in COMPARED.items()}
    out["metrics"] = {k: flat[k] for k in sorted(names | set(COMPARED)) if k in flat}
    out["keys"] = list(metrics)
    return out


def machine_key() -> dict[str, str]:
    """What bit-identical weights depend on: the torch build and its CPU kernels."""
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def run_golden(name: str, data_root: str, runs_root: str) -> dict[str, Any]:
    """Train golden run ``name`` under ``runs_root`` and return its fingerprint."""
    threads = torch.get_num_threads()
    try:
        RUNS[name](data_root, runs_root)
    finally:
        torch.set_num_threads(threads)
    return fingerprint(Path(runs_root) / name)


def record(names: list[str] | None = None) -> dict[str, Any]:
    """Run every golden run (or ``names``) and write :data:`GOLDEN_FILE`."""
    data_root = os.environ["GLIMPSE_DATA"]
    data_root = str(Path(data_root).absolute())
    stored = json.loads(GOLDEN_FILE.read_text()) if GOLDEN_FILE.exists() else {"runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("GLIMPSE_CACHE", str(Path(tmp) / "cache"))
        for name in names or list(RUNS):
            stored["runs"][name] = run_golden(name, data_root, tmp)
            print(name, stored["runs"][name]["last_weights"][:16], flush=True)
    stored["machine"] = machine_key()
    GOLDEN_FILE.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
    return stored


if __name__ == "__main__":
    record(sys.argv[1:] or None)
