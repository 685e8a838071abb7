"""Golden runs (issue 15): every trainer, moved onto :mod:`glimpse.loop`, still computes
what it computed before the move -- bit-identical weights, equal metrics.

The fingerprints in ``tests/reference/golden_runs.json`` were recorded on the trainers'
own epoch loops (commit before the refactor) by ``tests/reference/golden_runs.py``.
"""

from __future__ import annotations

import json

import pytest

from glimpse.loop import METRICS_KEYS
from tests.reference.golden_runs import COMPARED, GOLDEN_FILE, RUNS, machine_key, run_golden

GOLDEN = json.loads(GOLDEN_FILE.read_text())


@pytest.mark.parametrize("name", sorted(RUNS))
def test_trainer_matches_its_golden_run(name, data_root, tmp_path):
    """Every trainer's ``metrics.json`` holds exactly the keys of the one schema
    (:data:`glimpse.loop.METRICS_KEYS`), on any machine; on the torch build and CPU kernels
    the golden runs were recorded with, also bit-identical weights and equal numbers."""
    want = GOLDEN["runs"][name]
    got = run_golden(name, str(data_root), str(tmp_path))
    assert sorted(got["keys"]) == sorted(METRICS_KEYS), (
        f"{name}: metrics.json is not in the one schema"
    )
    if GOLDEN["machine"] != machine_key():
        pytest.skip(
            f"schema checked; golden weights were recorded with {GOLDEN['machine']}, this "
            f"machine has {machine_key()}: bitwise equality is not defined across torch "
            "builds/kernels"
        )
    assert got["last_weights"] == want["last_weights"], f"{name}: final weights changed"
    assert got["best_weights"] == want["best_weights"], f"{name}: selected weights changed"
    for old, new in COMPARED.items():
        if old in want["metrics"]:
            value = _recorded_part(got["metrics"][new or old], want["metrics"][old])
            assert value == want["metrics"][old], f"{name}: {old}"


def _recorded_part(got, want):
    """``got`` restricted to the keys the golden run recorded, recursively: a key added to
    a report later (e.g. ``errors_by_glimpses``, issue 17) is new information, and every
    recorded number must still be equal."""
    if isinstance(want, dict) and isinstance(got, dict):
        return {k: _recorded_part(got[k], v) if k in got else None for k, v in want.items()}
    return got


def test_golden_file_covers_every_trainer():
    assert set(GOLDEN["runs"]) == set(RUNS)
    assert all(len(GOLDEN["runs"][n]["metrics"]) >= 3 for n in RUNS)
