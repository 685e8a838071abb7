"""Helpers for tests that run the command-line scripts in process."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


def _script_main(name: str, args: list[str]):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(args)


def _run_dir(root: Path) -> Path:
    (run_dir,) = root.iterdir()
    return run_dir


COMMON = ["--device", "cpu", "--threads", "1", "--epochs", "1", "--max-batches-per-epoch", "2"]
COMMON += ["--batch-size", "16", "--train-limit", "64", "--eval-limit", "32"]
COMMON += ["--eval-batch-size", "32", "--run-name", "r"]
