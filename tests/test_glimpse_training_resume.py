"""``glimpse.training`` as a newcomer meets it: config checks with one-line errors, data
roots that mean the same from any folder, and run folders that a failed start or a failed
``--resume`` never damages (issue 14)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pickle
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glimpse.training import (
    MACHINE_FIELDS,
    Run,
    RunExistsError,
    check_config,
    load_checkpoint,
    load_run_config,
    parse_config,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parent.parent


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _train_ram(args: list[str]):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_ram", REPO / "scripts" / "train_ram.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(args)


def _tiny(tmp_path: Path, data_root: Path, *extra: str) -> list[str]:
    return [
        *("--runs-root", str(tmp_path / "runs"), "--run-name", "r"),
        *("--data-root", str(data_root), "--device", "cpu", "--playback", "0"),
        *("--max-batches-per-epoch", "2", "--batch-size", "16", "--val-size", "200"),
        *("--eval-limit", "100", "--eval-batch-size", "100", "--hidden", "32"),
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """A finished one-epoch RAM run, copied fresh for each test that changes it."""
    root = tmp_path_factory.mktemp("trained")
    _train_ram(_tiny(root, data_root, "--epochs", "1"))
    return root


@pytest.fixture
def run_copy(trained, tmp_path):
    import shutil

    shutil.copytree(trained / "runs", tmp_path / "runs")
    return tmp_path


# ------------------------------------------------------------------------ data roots
def test_relative_data_root_and_env_become_absolute(tmp_path, monkeypatch):
    from agents.config import HardTrainConfig

    monkeypatch.chdir(tmp_path)
    cfg = parse_config(HardTrainConfig, ["--data-root", "../somewhere/data"])
    assert cfg.data_root == str(tmp_path / ".." / "somewhere" / "data")
    assert Path(cfg.data_root).is_absolute()
    monkeypatch.setenv("GLIMPSE_DATA", "rel/data")
    assert parse_config(HardTrainConfig, []).data_root == str(tmp_path / "rel" / "data")


def test_conftest_hands_scripts_an_absolute_data_root(data_root):
    """The README runs ``GLIMPSE_DATA=../shared/data python -m pytest``: scripts that tests
    start in other folders must get the absolute path (they failed with the relative one)."""
    assert data_root.is_absolute()
    assert os.environ["GLIMPSE_DATA"] == str(data_root)


def test_ci_runs_the_readme_test_command_literally():
    """The one-line bash block after the README's ``<!-- test-command -->`` marker is a line
    of ``.ci/run``, character for character, and CI sets no data path of its own."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = lines.index("<!-- test-command -->")
    assert lines[start + 1] == "```bash" and lines[start + 3] == "```"
    command = lines[start + 2]
    assert command == 'pip install -e ".[dev]" && GLIMPSE_DATA=../shared/data python -m pytest'
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert command in ci
    assert not any(line.startswith("export GLIMPSE_DATA") for line in ci)


def test_script_with_relative_data_root_from_another_folder(data_root, tmp_path):
    import subprocess
    import sys

    work = tmp_path / "elsewhere"
    work.mkdir()
    rel = os.path.relpath(data_root, work)
    args = _tiny(Path("."), Path(rel), "--epochs", "1", "--threads", "1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_ram.py"), *args],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "GLIMPSE_DATA": "no/such/folder"},
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    saved = json.loads((work / "runs" / "r" / "config.json").read_text())
    assert (
        saved["data_root"] == str(data_root.resolve())
        or Path(saved["data_root"]).resolve() == data_root.resolve()
    )


# --------------------------------------------------------------------------- resume
@pytest.mark.parametrize(
    "flags, named",
    [
        (["--hidden", "64"], "--hidden 64 given, the run has 32"),
        (["--lr", "0.5"], "--lr 0.5 given, the run has 0.001"),
        (["--task", "cluttered60"], "--task 'cluttered60' given, the run has 'mnist'"),
        (["--epochs", "0"], "--epochs"),
    ],
)
def test_resume_with_a_changed_setting_is_refused_and_touches_nothing(
    run_copy, data_root, flags, named
):
    before = _snapshot(run_copy / "runs" / "r")
    with pytest.raises(ValueError, match=named) as info:
        _train_ram(_tiny(run_copy, data_root, "--resume", *flags))
    assert "\n" not in str(info.value)
    assert _snapshot(run_copy / "runs" / "r") == before


def test_resume_takes_the_runs_config_and_extends_the_schedule(run_copy, data_root):
    run_dir = run_copy / "runs" / "r"
    args = [
        *("--runs-root", str(run_copy / "runs"), "--run-name", "r", "--resume"),
        *("--data-root", str(data_root), "--epochs", "3"),
    ]
    metrics = _train_ram(args)  # --hidden 32, --eval-limit ... come from config.json
    assert metrics["images_seen"] == 3 * 2 * 16
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["epochs"] == 3 and saved["hidden"] == 32 and saved["eval_limit"] == 100
    state = load_checkpoint(run_dir / "last.pt")
    assert state["scheduler"]["T_max"] == 3 * 2 and state["scheduler"]["last_epoch"] == 6
    # the cosine over the new length, not the old one: lr(step 6 of 6) = 0
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_stretched_cosine_continues_from_the_new_curve():
    from glimpse.training import checkpoint_state, lr_scheduler, restore_checkpoint_state

    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = lr_scheduler(opt, "cosine", 10)
    for _ in range(10):
        opt.step()
        sched.step()
    state = checkpoint_state(model, opt, sched)
    opt2 = torch.optim.SGD(model.parameters(), lr=1.0)
    sched2 = lr_scheduler(opt2, "cosine", 20)  # --epochs doubled
    restore_checkpoint_state(state, model, opt2, sched2)
    assert opt2.param_groups[0]["lr"] == pytest.approx((1 + math.cos(math.pi * 10 / 20)) / 2)
    lrs = []
    for _ in range(10):
        opt2.step()
        sched2.step()
        lrs.append(opt2.param_groups[0]["lr"])
    want = [(1 + math.cos(math.pi * s / 20)) / 2 for s in range(11, 21)]
    assert lrs == pytest.approx(want, abs=1e-9)
    shorter = lr_scheduler(torch.optim.SGD(model.parameters(), lr=1.0), "cosine", 5)
    with pytest.raises(ValueError, match="taken 10 scheduled steps"):
        restore_checkpoint_state(state, model, shorter.optimizer, shorter)


def test_resume_of_a_missing_run_creates_nothing(tmp_path, data_root):
    with pytest.raises(FileNotFoundError, match="no run folder"):
        _train_ram(_tiny(tmp_path, data_root, "--resume", "--run-name", "ghost"))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "flags",
    [["--data-root", "/no/such/data"], ["--lr", "-1"], ["--std", "0"], ["--batch-size", "9999"]],
)
def test_a_failed_start_leaves_no_folder_and_a_retry_works(tmp_path, data_root, flags):
    with pytest.raises((ValueError, FileNotFoundError)):
        _train_ram(_tiny(tmp_path, data_root, "--epochs", "1", "--train-limit", "500", *flags))
    leftover = tmp_path / "runs" / "r"
    assert not leftover.exists() or not (leftover / "config.json").exists()
    _train_ram(_tiny(tmp_path, data_root, "--epochs", "1", "--max-batches-per-epoch", "1"))
    assert (leftover / "last.pt").is_file()


def test_folder_without_checkpoint_counts_as_not_started(tmp_path):
    @dataclasses.dataclass
    class C:
        lr: float = 0.1

    stale = tmp_path / "r"
    stale.mkdir()
    (stale / "config.json").write_text('{"lr": 0.5}')  # an old failed start
    orphan = stale / ".last.pt.0123456789abcdef.tmp"  # a write killed by SIGKILL
    orphan.write_bytes(b"x" * 100)
    keep = stale / "notes.tmp"  # not one of ours
    keep.write_text("mine")
    run = Run("r", C(), root=tmp_path)  # neither "exists" nor "pass --resume"
    assert not orphan.exists() and keep.exists()
    run.save_checkpoint({"model": {}})
    assert json.loads((stale / "config.json").read_text()) == {"lr": 0.1}
    with pytest.raises(RunExistsError):
        Run("r", C(), root=tmp_path)
    resumed = Run("r", C(), root=tmp_path, resume=True)
    assert resumed.resume_state() is not None
    with pytest.raises(ValueError, match=r"--lr 0.2 given, the run has 0.1"):
        Run("r", C(lr=0.2), root=tmp_path, resume=True)


def test_opening_a_run_writes_nothing_until_it_has_something(tmp_path):
    @dataclasses.dataclass
    class C:
        lr: float = 0.1

    Run("quiet", C(), root=tmp_path)
    assert not (tmp_path / "quiet").exists()


# ---------------------------------------------------------------- config.json on disk
@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d | {"hidden": "big"}, r"field 'hidden' is 'big', expected int"),
        (lambda d: d | {"lr": -1}, r"--lr must be >= 0, got -1.0"),
        (lambda d: d | {"task": "imagenet"}, r"field 'task' is 'imagenet', expected one of"),
        (lambda d: d | {"hiddden": 3}, r"unknown field 'hiddden'"),
        (lambda d: d | {"num_glimpses": 0}, r"--num-glimpses must be >= 1, got 0"),
    ],
)
def test_hand_edited_config_gives_one_line_naming_file_and_field(run_copy, edit, message):
    from agents.config import HardTrainConfig

    path = run_copy / "runs" / "r" / "config.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(ValueError, match=message) as info:
        load_run_config(path.parent, HardTrainConfig)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_evaluate_and_playback_name_a_broken_config(run_copy):
    from glimpse.experiments.evaluate import EvalConfig, evaluate_run
    from glimpse.experiments.playback import load_hard_config

    path = run_copy / "runs" / "r" / "config.json"
    path.write_text(path.read_text()[:40])  # truncated
    for call in (
        lambda: evaluate_run(EvalConfig(str(path.parent))),
        lambda: load_hard_config(path.parent),
    ):
        with pytest.raises(ValueError, match=r"config\.json is not valid JSON") as info:
            call()
        assert str(path) in str(info.value)


def test_playback_of_a_folder_that_is_not_a_run_is_an_error(tmp_path):
    from glimpse.experiments.playback import PlaybackConfig, playback

    (tmp_path / "x").mkdir()
    with pytest.raises(ValueError, match="not a run folder"):
        playback(PlaybackConfig(str(tmp_path / "x")))


# ---------------------------------------------------------------------- checkpoints
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_errors_are_one_line(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt: the file is empty \(0 bytes\)"):
        load_checkpoint(empty)
    evil = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, evil)
    with pytest.raises(ValueError) as info:
        load_checkpoint(evil)
    text = str(info.value)
    assert "not a Glimpse checkpoint" in text and "was not loaded" in text
    assert "\n" not in text and "weights_only=False" not in text
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.ones(2)}}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:50])
    with pytest.raises(ValueError, match=r"truncated\.pt \(50 bytes") as info:
        load_checkpoint(truncated)
    assert "\n" not in str(info.value) and str(info.value).rstrip()[-1] != ":"
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match=r"raw\.pt"):
        load_checkpoint(raw)


# ---------------------------------------------------------- every numeric CLI field
def _configs():
    from agents.config import HardTrainConfig
    from agents.parts_train import PartsTrainConfig
    from agents.ppo_train import PPOTrainConfig
    from glimpse.experiments.compare import CompareConfig
    from glimpse.experiments.curves import CurvesConfig
    from glimpse.experiments.evaluate import EvalConfig
    from glimpse.experiments.playback import PlaybackConfig
    from soft_baselines.train import SoftTrainConfig

    return [
        (HardTrainConfig, {}),
        (PPOTrainConfig, {}),
        (PartsTrainConfig, {}),
        (SoftTrainConfig, {}),
        (CompareConfig, {}),
        (EvalConfig, {"run_dir": "runs/x"}),
        (PlaybackConfig, {"run_dir": "runs/x"}),
        (CurvesConfig, {}),
    ]


def _numeric_fields(cls) -> list[tuple[str, type]]:
    import typing

    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        text = str(hints[f.name])
        for kind in (float, int):
            if kind.__name__ in text.replace("typing.", "") and "Literal" not in text:
                out.append((f.name, kind))
                break
    return out


def test_every_numeric_cli_field_has_a_bound():
    from glimpse.training import _rules_of

    unbounded = {
        (cls.__name__, name)
        for cls, _ in _configs()
        for name, _ in _numeric_fields(cls)
        if name not in _rules_of(cls)
    }
    assert unbounded == set(), "give these fields a RULES entry"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, 7),
    field_index=st.integers(0, 200),
    value=st.one_of(
        st.integers(-(10**12), 10**12),
        st.floats(allow_nan=True, allow_infinity=True),
    ),
)
def test_any_value_of_a_numeric_field_passes_or_fails_in_one_line(which, field_index, value):
    cls, required = _configs()[which]
    fields = _numeric_fields(cls)
    name, kind = fields[field_index % len(fields)]
    if kind is int and isinstance(value, float):
        if not math.isfinite(value):
            return
        value = int(value)
    flag = "--" + name.replace("_", "-")
    current = getattr(cls(**required), name)
    value = (value,) if isinstance(current, tuple) else value
    cfg = dataclasses.replace(cls(**required), **{name: value})
    try:
        check_config(cfg)
    except ValueError as err:
        text = str(err)
        assert text.startswith(flag + " must be ") and "\n" not in text
        assert repr(value) in text
        return
    items = value if isinstance(value, tuple) else (value,)
    assert all(math.isfinite(x) for x in items)


def test_zero_is_a_value_not_unset():
    from agents.config import HardTrainConfig

    for flag in ("--num-glimpses", "--glimpse-size", "--num-scales"):
        with pytest.raises(ValueError, match=f"{flag} must be >= 1, got 0"):
            parse_config(HardTrainConfig, [flag, "0"])
    assert parse_config(HardTrainConfig, ["--num-glimpses", "3"]).resolved().num_glimpses == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--run-name", ""], "--run-name must be a plain folder name, got ''"),
        (["--threads", "-1"], "--threads must be >= 0, got -1"),
        (["--grad-clip", "-1"], "--grad-clip must be >= 0, got -1.0"),
    ],
)
def test_bad_cli_values_are_one_line(args, message):
    from agents.config import HardTrainConfig

    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(HardTrainConfig, args)


def test_compare_rejects_bad_seeds_and_a_file_as_out(tmp_path):
    from glimpse.experiments.compare import CompareConfig

    with pytest.raises(ValueError, match=r"--seeds must be >= 0, got \(-1,\)"):
        parse_config(CompareConfig, ["--seeds", "-1"])
    out = tmp_path / "file.txt"
    out.write_text("x")
    with pytest.raises(ValueError, match="is a file; expected a folder"):
        CompareConfig(out=str(out)).resolved(known=["ram"])


def test_machine_fields_are_what_a_resume_may_take_from_the_new_machine():
    assert {"data_root", "device", "threads", "runs_root", "resume"} <= MACHINE_FIELDS
    assert "lr" not in MACHINE_FIELDS and "epochs" not in MACHINE_FIELDS


def test_read_json_names_a_truncated_file(tmp_path):
    from glimpse.io import read_json

    path = tmp_path / "metrics.json"
    path.write_text('{"test_accuracy": 0.9')
    with pytest.raises(ValueError, match=r"metrics\.json is not valid JSON") as info:
        read_json(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError, match=r"nothing\.json"):
        read_json(tmp_path / "nothing.json")
