"""Shared training plumbing: run folders, atomic checkpoints (a mid-epoch round trip gives
the same next losses), resume, config CLI, devices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from agents.ram import RAM
from agents.reinforce import collect_rollout, reinforce_loss
from envs import GlimpseVectorEnv, MDPConfig
from glimpse.io import atomic_write
from glimpse.training import (
    Run,
    RunExistsError,
    checkpoint_state,
    cli_main,
    load_checkpoint,
    load_weights,
    lr_scheduler,
    parse_config,
    resolve_device,
    restore_checkpoint_state,
)
from tests.helpers.reinforce import _toy_source

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass
class _Cfg:
    """A tiny config."""

    lr: float = 0.1
    """Learning rate."""
    name: str = "x"
    """A name."""


def test_parse_config_from_dataclass():
    cfg = parse_config(_Cfg, ["--lr", "0.5"])
    assert cfg == _Cfg(lr=0.5, name="x")
    with pytest.raises(SystemExit):
        parse_config(_Cfg, ["--nope", "1"])


def test_atomic_write_failure_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_run_folder_config_checkpoint_roundtrip(tmp_path):
    run = Run("r1", _Cfg(), root=tmp_path)
    assert not (tmp_path / "r1").exists()  # nothing is written before the first checkpoint
    state = {"model": {"w": torch.arange(3.0)}, "epoch": 2, "best": 0.5}
    run.save_checkpoint(state)
    assert json.loads((tmp_path / "r1" / "config.json").read_text()) == {"lr": 0.1, "name": "x"}
    back = run.load_checkpoint()
    assert torch.equal(back["model"]["w"], torch.arange(3.0)) and back["epoch"] == 2
    assert json.loads(back["config"]) == {"lr": 0.1, "name": "x"}
    run.log_scalars({"train/x": 1.0}, 0)
    run.close()
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "r1").iterdir())
    with pytest.raises(RunExistsError, match="--resume"):
        Run("r1", _Cfg(), root=tmp_path)
    assert Run("r1", _Cfg(), root=tmp_path, resume=True).load_checkpoint()["epoch"] == 2


def test_disabled_run_writes_nothing(tmp_path):
    run = Run("quiet", _Cfg(), root=tmp_path, enabled=False)
    run.log_scalars({"a": 1.0}, 0)
    assert run.save_checkpoint({"x": 1}) is None
    assert not (tmp_path / "quiet").exists()


def test_bad_checkpoint_and_names(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"bad\.pt"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="plain folder name"):
        Run("a/b", _Cfg(), root=tmp_path)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_load_weights_from_a_file_or_run_folder(tmp_path):
    torch.manual_seed(0)
    src, dst = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    run = Run("r", _Cfg(), root=tmp_path)
    run.save_checkpoint({"model": src.state_dict(), "epoch": 1}, "best")
    assert load_weights(dst, tmp_path / "r") == tmp_path / "r" / "best.pt"
    assert torch.equal(dst.weight, src.weight) and torch.equal(dst.bias, src.bias)
    with pytest.raises(ValueError, match=r"2 differences: weight: checkpoint \(2, 3\) vs model "):
        load_weights(torch.nn.Linear(4, 5), tmp_path / "r" / "best.pt")
    with pytest.raises(ValueError, match="missing extra"):
        load_weights(torch.nn.ParameterDict({"extra": torch.nn.Parameter(torch.ones(1))}), run.dir)
    run.save_checkpoint({"epoch": 1}, "last")
    with pytest.raises(ValueError, match="no 'model' weights"):
        load_weights(dst, run.checkpoint_path("last"))
    with pytest.raises(FileNotFoundError, match=r"best\.pt"):
        load_weights(dst, tmp_path)


def test_cli_main_turns_user_errors_into_one_line(monkeypatch, capsys):
    def bad_value() -> None:
        raise ValueError("epochs must be >= 1, got 0")

    monkeypatch.delenv("GLIMPSE_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(bad_value)
    assert exit_info.value.code == "error: epochs must be >= 1, got 0"  # stderr, status 1
    monkeypatch.setenv("GLIMPSE_TRACEBACK", "1")
    with pytest.raises(ValueError, match="epochs"):
        cli_main(bad_value)

    def bug() -> None:
        raise TypeError("a bug, not a user error")

    monkeypatch.delenv("GLIMPSE_TRACEBACK")
    with pytest.raises(TypeError):  # programming errors keep their traceback
        cli_main(bug)


@pytest.mark.parametrize("torchrun", [False, True])
def test_cli_main_skips_finalisation_only_in_a_finished_torchrun_worker(tmp_path, torchrun):
    """Under torchrun (RANK/WORLD_SIZE set, no process group left) a script's process ends
    right after ``main`` with status 0 and its output flushed, without running atexit
    handlers (interpreter finalisation is where gloo occasionally aborts a rank); a plain
    run finalises as usual."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "s.py"
    script.write_text(
        "import atexit, sys\n"
        "from glimpse.training import cli_main\n"
        "atexit.register(lambda: print('finalised', flush=True))\n"
        "cli_main(lambda: print('main done', end='') or sys.stderr.write('err line'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    if torchrun:
        env.update(RANK="0", WORLD_SIZE="1")
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("main done")  # buffered output survives os._exit
    assert proc.stderr.endswith("err line")
    assert ("finalised" in proc.stdout) is (not torchrun)


# ----------------------------------------------- checkpoint round-trip (library level)
def _setup(seed: int = 0):
    torch.manual_seed(seed)
    venv = GlimpseVectorEnv(_toy_source(40), 16, MDPConfig(glimpse_size=8, num_glimpses=3))
    venv.reset(seed=seed)
    ram = RAM((1, 1, 8, 8), hidden=16, std=0.2, detach_location=True)
    opt = torch.optim.Adam(ram.parameters(), lr=1e-2)
    sched = lr_scheduler(opt, "cosine", 10)
    return venv, ram, opt, sched


def _train_batch(venv, ram, opt, sched) -> float:
    loss, _ = reinforce_loss(collect_rollout(ram, venv))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss.item()


def test_checkpoint_round_trip_mid_epoch_gives_the_same_next_losses(tmp_path):
    """Save after 3 batches (mid-epoch: 40 images, 16 per batch), restore into fresh
    objects from a ``weights_only`` file: the next batches match an uninterrupted run
    bitwise (model, Adam, schedule, torch RNG and the image stream all restored)."""
    venv, ram, opt, sched = _setup()
    for _ in range(3):
        _train_batch(venv, ram, opt, sched)
    state = checkpoint_state(ram, opt, sched, stream=venv.stream.state_dict())
    torch.save(state, tmp_path / "ck.pt")
    uninterrupted = [_train_batch(venv, ram, opt, sched) for _ in range(3)]

    venv2, ram2, opt2, sched2 = _setup(seed=7)  # different weights, stream and RNG
    loaded = torch.load(tmp_path / "ck.pt", weights_only=True)
    restore_checkpoint_state(loaded, ram2, opt2, sched2)
    venv2.stream.load_state_dict(loaded["stream"])
    resumed = [_train_batch(venv2, ram2, opt2, sched2) for _ in range(3)]
    assert resumed == uninterrupted
    # Without the stream state the next batch holds other images: the state matters.
    venv3, ram3, opt3, sched3 = _setup(seed=7)
    restore_checkpoint_state(loaded, ram3, opt3, sched3)
    assert _train_batch(venv3, ram3, opt3, sched3) != uninterrupted[0]
