"""Results as data (issue 16): ``docs/results.csv`` from runs' ``metrics.json`` and the
tables of ``docs/RESULTS.md`` and ``README.md`` generated from it."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest

from glimpse.results import (
    ATTENTION_SUMMARY,
    BEGIN,
    COLUMNS,
    END,
    METHODS,
    PAPER,
    SWEEP_COLUMNS,
    TASKS,
    ResultsConfig,
    format_pct,
    merge_rows,
    paper_figure,
    parse_pct,
    plot_pareto,
    plot_readouts,
    read_csv,
    render_readouts,
    render_table,
    rows_from_run,
    update_results,
)

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fake_run(root: Path, name: str, protocols: dict, **metrics) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"task": "mnist", "agent": "ram"}))
    body = {
        "epochs": 7,
        "train_seconds_this_session": 123.4,
        "machine": "test box",
        "command": "python scripts/train_ram.py --epochs 7",
        **metrics,
    }
    if protocols:
        body["protocols"] = protocols
    (d / "metrics.json").write_text(json.dumps(body))
    return d


def _protocols(val: float = 0.02) -> dict:
    return {
        "single-mean": {
            "eval_seeds": [0, 1],
            "val_errors": [val, val + 0.002],
            "test_errors": [0.0150, 0.0170],
        },
        "single-sampled": {
            "eval_seeds": [0, 1, 2],
            "val_errors": [0.03, 0.03, 0.03],
            "test_errors": [0.025, 0.026, 0.027],
        },
        "mc10": {"eval_seeds": [0], "val_errors": [0.01], "test_errors": [0.0123]},
    }


def test_rows_from_a_run_carry_its_numbers(tmp_path):
    rows = rows_from_run(_fake_run(tmp_path, "r1", _protocols()))
    assert [r["protocol"] for r in rows] == ["single-mean", "single-sampled", "mc10"]
    mean = rows[0]
    assert set(mean) == set(COLUMNS)
    assert mean["test_error_pct"] == "1.60 ± 0.14" and mean["val_error_pct"] == "2.10 ± 0.14"
    assert rows[1]["test_error_pct"] == "2.60 ± 0.10" and rows[1]["eval_seeds"] == "3"
    assert rows[2]["test_error_pct"] == "1.23" and rows[2]["eval_seeds"] == "1"
    assert mean["epochs"] == "7" and mean["train_wall_s"] == "123" and mean["run"] == "r1"
    assert mean["paper_error_pct"] == f"{PAPER[('mnist', 'ram')].error_pct:.2f}"
    assert "1406.6247" in mean["paper_ref"]
    assert mean["machine"] == "test box"
    assert rows_from_run(tmp_path / "r1", machine="2-core VM")[0]["machine"] == "2-core VM"
    assert all(r["attention_in_box"] == r["attention_on_clutter"] == "" for r in rows)


@pytest.mark.parametrize(
    ("task", "method", "error", "arxiv", "table"),
    [
        ("dram-pairs", "ram", 9.0, "1412.7755", "Table 1"),
        ("dram-pairs", "dram", 5.0, "1412.7755", "Table 1"),
        ("dram-addition", "dram", 2.5, "1412.7755", "Table 2"),
        ("dram-addition", "soft-none", 3.2, "1412.7755", "Table 2"),
        ("stn-cluttered60", "soft-stn", 1.7, "1506.02025", "ST-CNN"),
        ("stn-cluttered60", "soft-none", 3.5, "1506.02025", "CNN"),
    ],
)
def test_the_dram_and_stn_papers_figures_name_their_source_and_are_unverified(
    task, method, error, arxiv, table
):
    """Written out apart from the table (issue 16); every figure's task and method are
    names a results row can carry, and none was read from the paper itself yet."""
    figure = paper_figure(task, method)
    assert figure is not None and figure.error_pct == error
    assert arxiv in figure.ref and table in figure.ref and "unverified" in figure.ref
    assert all(t in TASKS and m in METHODS for t, m in PAPER)
    assert paper_figure("stn-cluttered60", "ram") is None  # no paper figure on other data
    assert paper_figure("cluttered60", "soft-stn") is None  # RAM's recipe, not the STN's


def test_a_run_on_a_paper_task_of_issue_16_becomes_rows_beside_its_figure(tmp_path):
    run = _fake_run(tmp_path, "dp", _protocols())
    (run / "config.json").write_text(json.dumps({"task": "dram-pairs", "agent": "dram"}))
    rows = merge_rows(rows_from_run(_fake_run(tmp_path, "m", _protocols())), rows_from_run(run))
    assert [r["task"] for r in rows] == ["mnist"] * 3 + ["dram-pairs"] * 3  # table order
    assert rows[-1]["paper_error_pct"] == "5.00" and "unverified" in rows[-1]["paper_ref"]
    assert "5.00 (unverified)" in render_table(rows)


def test_the_columns_are_the_thirteen_of_issue_16_then_the_attention_scores_and_budget():
    assert COLUMNS == (
        "task",
        "method",
        "protocol",
        "test_error_pct",
        "val_error_pct",
        "eval_seeds",
        "epochs",
        "train_wall_s",
        "machine",
        "paper_error_pct",
        "paper_ref",
        "run",
        "command",
        "attention_in_box",
        "attention_on_clutter",
        "budget",
        "params",
        "inference_flops_per_image",
        "pixels_per_image",
        "train_flops_to_best",
        "train_seeds",
    )


def test_an_exported_attention_summary_fills_its_protocols_row(tmp_path):
    d = _fake_run(tmp_path, "r", _protocols())
    (d / ATTENTION_SUMMARY).parent.mkdir()
    summary = {
        "split": "test",
        "checkpoint": "best",
        "protocol": "single-mean",
        "attention_in_box": 0.61234,
        "attention_on_clutter": 0.1,
    }
    (d / ATTENTION_SUMMARY).write_text(json.dumps(summary))
    rows = {r["protocol"]: r for r in rows_from_run(d)}
    assert rows["single-mean"]["attention_in_box"] == "0.612"
    assert rows["single-mean"]["attention_on_clutter"] == "0.100"
    for other in ("single-sampled", "mc10"):  # measured with another policy: not these
        assert rows[other]["attention_in_box"] == rows[other]["attention_on_clutter"] == ""
    assert "| 0.612 | 0.100 |" in render_table(list(rows.values()))
    del summary["attention_on_clutter"]  # translated datasets: no clutter
    (d / ATTENTION_SUMMARY).write_text(json.dumps(summary))
    row = rows_from_run(d)[0]
    assert row["attention_in_box"] == "0.612" and row["attention_on_clutter"] == ""
    (d / ATTENTION_SUMMARY).write_text(json.dumps({**summary, "split": "val"}))
    with pytest.raises(ValueError, match="test-split"):
        rows_from_run(d)


def test_a_csv_from_before_the_attention_columns_reads_with_them_empty(tmp_path):
    old = tmp_path / "old.csv"
    rows = rows_from_run(_fake_run(tmp_path, "a", _protocols()))
    with open(old, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS[:13], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    assert read_csv(old) == rows
    (tmp_path / "bad.csv").write_text("task,method\n")
    with pytest.raises(ValueError, match="columns must be"):
        read_csv(tmp_path / "bad.csv")


def test_a_csv_from_before_the_seeds_column_reads_with_one_seed(tmp_path):
    old = tmp_path / "old.csv"
    rows = rows_from_run(_fake_run(tmp_path, "a", _protocols()))
    with open(old, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS[:-1], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    assert read_csv(old) == rows
    assert {r["train_seeds"] for r in rows} == {"1"}


def _seed_run(root: Path, name: str, seed: int, test: float, val: float, **metrics) -> Path:
    """A fake run of one recipe at ``seed``: single-mean errors ``test``/``val`` on two
    evaluation seeds (``x`` and ``x + 0.002``)."""
    d = _fake_run(
        root,
        name,
        {
            "single-mean": {
                "eval_seeds": [0, 1],
                "val_errors": [val, val + 0.002],
                "test_errors": [test, test + 0.002],
            }
        },
        **metrics,
    )
    (d / "config.json").write_text(
        json.dumps({"task": "mnist", "agent": "ram", "seed": seed, "run_name": name, "lr": 1e-3})
    )
    return d


def test_one_recipe_at_three_seeds_is_one_row_with_the_spread_over_seeds(tmp_path):
    """``--over-seeds``: each run's error is the mean over its evaluation seeds, the row's
    ``mean ± sd`` is over the training seeds (sample sd), and the seeds are counted."""
    from glimpse.results import rows_from_seeds

    runs = [
        _seed_run(tmp_path, "s0", 0, 0.010, 0.020, stopped="patience", history=[1, 2, 3]),
        _seed_run(tmp_path, "s1", 1, 0.012, 0.022, params=100, train_seconds=100.0),
        _seed_run(tmp_path, "s2", 2, 0.014, 0.024, params=100, train_seconds=200.0),
    ]
    (row,) = rows_from_seeds(runs)
    # per-seed test means 1.1, 1.3, 1.5 % -> mean 1.3, sd 0.2
    assert row["test_error_pct"] == "1.30 ± 0.20" and row["val_error_pct"] == "2.30 ± 0.20"
    assert row["train_seeds"] == "3" and row["eval_seeds"] == "2"
    assert row["run"] == "s0 + s1 + s2"
    assert row["budget"] == "7 epochs, stopped by patience after 3 validations (1 of 3 seeds)"
    assert row["params"] == ""  # s0 did not record it: no mean of two
    assert set(row) == set(COLUMNS)
    merged = merge_rows(rows_from_run(runs[0], budget=None), [row])
    assert len(merged) == 2  # a single run's row and the three-seed row of other budgets


def test_over_seeds_refuses_runs_that_are_not_one_recipe(tmp_path):
    from glimpse.results import rows_from_seeds

    a = _seed_run(tmp_path, "a", 0, 0.01, 0.02)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        rows_from_seeds([a])
    with pytest.raises(ValueError, match="seeds must differ"):
        rows_from_seeds([a, _seed_run(tmp_path, "b", 0, 0.01, 0.02)])
    c = _seed_run(tmp_path, "c", 1, 0.01, 0.02)
    config = json.loads((c / "config.json").read_text())
    (c / "config.json").write_text(json.dumps({**config, "lr": 3e-3}))
    with pytest.raises(ValueError, match=r"c differs from a in lr: 0\.003 against 0\.001"):
        rows_from_seeds([a, c])


def test_update_results_over_seeds_writes_one_row(tmp_path):
    runs = [_seed_run(tmp_path, f"s{i}", i, 0.01 + 0.002 * i, 0.02) for i in range(3)]
    md = tmp_path / "R.md"
    md.write_text(f"x\n{BEGIN}\n{END}\n")
    cfg = ResultsConfig(
        runs=tuple(map(str, runs)), csv=str(tmp_path / "r.csv"), markdown=(str(md),)
    )
    alone = update_results(dataclasses.replace(cfg, runs=(str(runs[0]),), budget="7 epochs, s0"))
    assert [(r["run"], r["budget"]) for r in alone] == [("s0", "7 epochs, s0")]
    rows = update_results(dataclasses.replace(cfg, over_seeds=True))
    # seed 0's own row (the best on validation) is superseded, not kept beside the seeds'
    assert [(r["train_seeds"], r["test_error_pct"]) for r in rows] == [("3", "1.30 ± 0.20")]
    assert "| 3 | 2 |" in md.read_text()  # train seeds, eval seeds columns


def test_runs_without_protocols_use_evaluate_hard_output_or_fail(tmp_path):
    d = _fake_run(tmp_path, "old", {}, command="")
    with pytest.raises(ValueError, match="--all-protocols"):
        rows_from_run(d)
    (d / "evaluations").mkdir()
    (d / "evaluations" / "protocols-best.json").write_text(
        json.dumps({"protocols": _protocols(), "machine": "eval box"})
    )
    with pytest.raises(ValueError, match=r"command\.txt"):
        rows_from_run(d)
    (d / "command.txt").write_text("python scripts/train_ram.py --epochs 3\n")
    rows = rows_from_run(d)
    assert rows[0]["command"] == "python scripts/train_ram.py --epochs 3"
    assert rows[0]["machine"] == "eval box" and rows[0]["test_error_pct"] == "1.60 ± 0.14"


def test_merge_replaces_the_same_task_method_protocol(tmp_path):
    old = rows_from_run(_fake_run(tmp_path, "a", _protocols()))
    new = rows_from_run(_fake_run(tmp_path, "b", {"mc10": _protocols()["mc10"]}))
    merged = merge_rows(old, new)
    assert len(merged) == 3
    assert {r["protocol"]: r["run"] for r in merged} == {
        "single-mean": "a",
        "single-sampled": "a",
        "mc10": "b",
    }
    with pytest.raises(ValueError, match="exactly the columns"):
        merge_rows(old, [{"task": "mnist"}])


def test_format_and_parse_pct():
    assert format_pct([0.01, 0.03]) == "2.00 ± 1.41"
    assert parse_pct("2.00 ± 1.41") == (2.0, 1.41) and parse_pct("1.5") == (1.5, 0.0)
    with pytest.raises(ValueError):
        format_pct([])


def test_headline_is_the_single_protocol_better_on_validation(tmp_path):
    rows = rows_from_run(_fake_run(tmp_path, "a", _protocols(val=0.02)))
    table = render_table(rows)
    assert "**single-mean** (headline)" in table and "**1.60 ± 0.14**" in table
    assert "mc10 (10x inference)" in table
    rows = rows_from_run(_fake_run(tmp_path, "b", _protocols(val=0.05)))
    assert "**single-sampled** (headline)" in render_table(rows)


def test_update_writes_csv_and_tables_and_check_catches_drift(tmp_path):
    md = tmp_path / "doc.md"
    md.write_text(f"intro\n{BEGIN}\nstale\n{END}\noutro\n")
    out = tmp_path / "results.csv"
    run = _fake_run(tmp_path, "a", _protocols())
    cfg = ResultsConfig(runs=(str(run),), csv=str(out), markdown=(str(md),))
    rows = update_results(cfg)
    assert read_csv(out) == rows and len(rows) == 3
    with open(out, newline="") as f:
        assert tuple(next(csv.reader(f))) == COLUMNS
    text = md.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "stale" not in text
    update_results(ResultsConfig(csv=str(out), markdown=(str(md),), check=True))
    md.write_text(text.replace("1.60 ± 0.14", "1.10 ± 0.14"))  # a typed number
    with pytest.raises(ValueError, match="disagrees"):
        update_results(ResultsConfig(csv=str(out), markdown=(str(md),), check=True))


def test_a_real_training_run_becomes_rows(data_root, tmp_path):
    from agents.config import HardTrainConfig
    from agents.train import train_reinforce

    cfg = HardTrainConfig(
        data_root=str(data_root),
        runs_root=str(tmp_path),
        run_name="tiny",
        epochs=1,
        max_batches_per_epoch=10,
        batch_size=32,
        val_size=300,
        eval_batch_size=300,
        eval_limit=300,
        eval_seeds=2,
        init_location="random",
        playback=0,
        device="cpu",
        threads=1,
    )
    metrics = train_reinforce(cfg)
    rows = rows_from_run(tmp_path / "tiny")
    readouts = [f"{p}@{t}" for p in ("single-mean", "single-sampled") for t in range(1, 6)]
    assert [r["protocol"] for r in rows] == ["single-mean", "single-sampled", *readouts]
    assert {r["budget"] for r in rows} == {"1 epochs"}
    for key in ("params", "inference_flops_per_image", "pixels_per_image", "train_flops_to_best"):
        assert {r[key] for r in rows} == {str(round(metrics[key]))}, key
    assert rows[0]["pixels_per_image"] == str(6 * 64)  # 6 glimpses of 8x8, one scale
    head = metrics["protocols"][metrics["protocol"]]
    assert metrics["test_error"] == head["test_error"]
    for r in rows:
        base, _, t = r["protocol"].partition("@")
        res = metrics["protocols"][base]
        errs = [c[int(t) - 1] for c in res["test_errors_by_glimpses_seeds"]] if t else None
        assert r["test_error_pct"] == format_pct(errs or res["test_errors"])
        assert r["eval_seeds"] == "2"
    # the early readouts are their own table, the last column the protocol's own row
    table = render_readouts(rows).splitlines()
    assert table[0].endswith("| t = 6 |") and len(table) == 4
    assert table[2].split(" | ")[-1].rstrip(" |") == rows[0]["test_error_pct"]
    assert "@" not in render_table(rows)
    pareto = plot_pareto(rows, tmp_path / "pareto.png")
    assert pareto is not None and pareto.stat().st_size > 10_000
    no_costs = [{**r, "inference_flops_per_image": ""} for r in rows]
    assert plot_pareto(no_costs, tmp_path / "none.png") is None
    from glimpse.experiments.curves import plot_compute_curves, read_history

    hist = read_history(tmp_path / "tiny")
    assert hist["val_error"].tolist() == [h["val_error"] for h in metrics["history"]]
    assert hist["train_flops"][-1] == metrics["train_flops"]  # one validation, at the end
    flops_png, time_png = plot_compute_curves([tmp_path / "tiny"], tmp_path, "cc")
    assert flops_png.name == "cc_vs_flops.png" and time_png.stat().st_size > 10_000
    png = plot_readouts(rows, tmp_path / "readouts.png")
    assert png is not None and png.stat().st_size > 10_000
    assert plot_readouts(rows[:2], tmp_path / "none.png") is None  # no early readouts
    relabelled = rows_from_run(tmp_path / "tiny", budget="converged")
    assert {r["budget"] for r in relabelled} == {"converged"}


def test_checked_in_tables_agree_with_the_csv():
    csv_path = REPO / "docs" / "results.csv"
    with open(csv_path, newline="") as f:
        assert tuple(next(csv.reader(f))) == COLUMNS
    rows = read_csv(csv_path)
    protocols = ("single-mean", "single-sampled", "deterministic")
    for r in rows:
        assert r["task"] in TASKS
        assert r["method"] in METHODS or r["method"].startswith("soft-")
        base, sep, t = r["protocol"].partition("@")
        assert base in protocols or (base.startswith("mc") and base[2:].isdigit())
        assert not sep or (t.isdigit() and base in protocols)
        assert r["run"] and r["command"] and r["machine"] and r["budget"]
    from soft_baselines.registry import list_modules

    update_results(
        ResultsConfig(
            csv=str(csv_path),
            markdown=(str(REPO / "docs" / "RESULTS.md"), str(REPO / "README.md")),
            check=True,
        ),
        blocks=[m for m in list_modules() if m != "stn"],  # as scripts/results_table.py
    )
    sweep = REPO / "docs" / "soft_modules.csv"
    with open(sweep, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == SWEEP_COLUMNS
        assert all(r["run"] and r["command"] and r["machine"] for r in reader)
    update_results(
        ResultsConfig(
            csv=str(sweep), markdown=(str(REPO / "docs" / "RESULTS.md"),), check=True, sweep=True
        )
    )


def test_the_script_regenerates(tmp_path):
    spec = importlib.util.spec_from_file_location("rt", REPO / "scripts" / "results_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    md = tmp_path / "x.md"
    md.write_text(f"{BEGIN}\n{END}\n")
    run = _fake_run(tmp_path, "a", _protocols())
    rows = module.main(
        ["--runs", str(run), "--csv", str(tmp_path / "r.csv"), "--markdown", str(md)]
    )
    assert len(rows) == 3 and "| mnist | ram |" in md.read_text()


def _soft_run(root: Path, name: str, module: str, dataset: str, err: float) -> Path:
    d = root / name
    d.mkdir(parents=True)
    metrics = {
        "schema": 1,
        "method": f"soft-{module}",
        "task": dataset,
        "params": 1234,
        "test_error": err,
        "val_best_accuracy": 0.9,
        "images_seen": 19200,
        "train_seconds": 61.4,
        "machine": "test box",
        "command": f"python scripts/train_soft.py --module {module} --dataset {dataset}",
    }
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


def test_soft_module_sweep_rows_and_generated_table(tmp_path):
    """``--sweep``: soft runs' metrics.json -> docs/soft_modules.csv -> one line per module,
    sorted by the cluttered error, 'not run' where a dataset is missing; --check fails on a
    stale table; a non-soft run is refused."""
    from glimpse.results import SWEEP_BEGIN, SWEEP_END

    runs = [
        _soft_run(tmp_path, "a-m", "eca", "mnist", 0.0218),
        _soft_run(tmp_path, "a-c", "eca", "cluttered60", 0.1409),
        _soft_run(tmp_path, "b-m", "rnl", "mnist", 0.0199),
        _soft_run(tmp_path, "c-c", "glore", "cluttered60", 0.0901),
    ]
    md = tmp_path / "R.md"
    md.write_text(f"x\n{SWEEP_BEGIN}\n{SWEEP_END}\ny\n")
    csv_path = tmp_path / "s.csv"
    kw = {"csv": str(csv_path), "markdown": (str(md),), "sweep": True}
    rows = update_results(ResultsConfig(runs=tuple(map(str, runs)), **kw))
    assert len(rows) == 4 and csv_path.read_text().startswith("module,dataset,params,")
    lines = md.read_text().splitlines()
    body = lines[lines.index(SWEEP_BEGIN) + 3 : lines.index(SWEEP_END)]
    assert [ln.split(" | ")[0] for ln in body] == ["| glore", "| eca", "| rnl"]
    assert body[1].split(" | ")[2:6] == ["2.18%", "61", "14.09%", "61"]
    assert "not run" in body[0] and "not run" in body[2]
    update_results(ResultsConfig(check=True, **kw))  # agrees
    md.write_text(md.read_text().replace("14.09%", "4.09%"))
    with pytest.raises(ValueError, match="soft-modules table disagrees"):
        update_results(ResultsConfig(check=True, **kw))
    hard = _fake_run(tmp_path, "hard", {})
    with pytest.raises(ValueError, match="not a soft run"):
        update_results(ResultsConfig(runs=(str(hard),), **kw))


def test_a_soft_run_becomes_a_deterministic_row(data_root, tmp_path):
    from soft_baselines.train import SoftTrainConfig, train_soft

    cfg = SoftTrainConfig(
        module="none",
        data_root=str(data_root),
        runs_root=str(tmp_path),
        run_name="cnn",
        epochs=1,
        max_batches_per_epoch=5,
        batch_size=16,
        widths=(4, 8, 8),
        val_size=200,
        eval_batch_size=200,
        log_images=0,
        device="cpu",
        threads=1,
    )
    metrics = train_soft(cfg)
    (row,) = rows_from_run(tmp_path / "cnn", budget="5 batches")
    assert (row["task"], row["method"], row["protocol"]) == ("mnist", "soft-none", "deterministic")
    assert row["test_error_pct"] == format_pct([metrics["test_error"]])
    assert row["val_error_pct"] == format_pct([1 - metrics["val_best_accuracy"]])
    assert (row["eval_seeds"], row["budget"]) == ("1", "5 batches")


def _row(method: str, protocol: str, test: str, val: str, budget: str = "30 epochs", **kw):
    row = dict.fromkeys(COLUMNS, "")
    row.update(
        task=kw.pop("task", "mnist"),
        method=method,
        protocol=protocol,
        test_error_pct=test,
        val_error_pct=val,
        budget=budget,
        run=f"{method}-{budget.split()[0]}",
        command=kw.pop("command", "python x"),
        machine="box",
        **kw,
    )
    return row


def test_compact_table_chooses_each_role_on_validation_not_test():
    """Issue 21's compact table: the best hard agent, the best soft model, every control
    and the plain CNN per task, each picked by validation error (a row better on test but
    worse on validation never wins), with the costs beside them."""
    from glimpse.results import render_compact

    rows = [
        # ram: the 100-epoch budget is better on validation; its headline is single-mean
        _row("ram", "single-mean", "3.00", "3.10"),
        _row("ram", "single-sampled", "2.00", "3.50"),
        _row("ram", "single-mean", "1.20", "1.50", "100 epochs", params="1000"),
        _row("ram", "single-sampled", "1.10", "1.60", "100 epochs"),
        _row("ram", "mc10", "0.60", "0.80", "100 epochs"),  # never in the compact table
        _row("ram-conv", "single-mean", "0.90", "1.70"),  # better test, worse val
        _row("soft-se", "deterministic", "0.80", "0.95"),
        _row("soft-stn", "deterministic", "0.50", "1.05"),
        _row("soft-none", "deterministic", "0.70", "1.00", train_flops_to_best="123456789"),
        _row("glimpse-grid", "single-mean", "4.00", "4.10"),
        _row("ram", "single-mean@3", "9.00", "9.00", "100 epochs"),  # a readout row
        _row("ram", "single-mean", "20.0", "21.0", task="cluttered60", attention_in_box="0.5"),
        _row("ram", "single-sampled", "19.0", "20.0", task="cluttered60"),
    ]
    lines = render_compact(rows).splitlines()[2:]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert [(c[0], c[1], c[2], c[3], c[4], c[5]) for c in cells] == [
        ("mnist", "best hard", "ram", "100 epochs", "single-mean", "1.20"),
        ("mnist", "best soft", "soft-se", "30 epochs", "deterministic", "0.80"),
        ("mnist", "control", "glimpse-grid", "30 epochs", "single-mean", "4.00"),
        ("mnist", "plain CNN", "soft-none", "30 epochs", "deterministic", "0.70"),
        ("cluttered60", "best hard", "ram", "30 epochs", "single-sampled", "19.0"),
    ]
    assert cells[0][8] == "1000" and cells[3][11] == "1.2e+08"
    assert cells[4][13] == "0.5"  # the run's export (of the policy's mean) beside its headline


def test_main_command_table_holds_only_the_rows_of_the_command_as_printed():
    """The README states what its main command gives (issue 16): only rows marked as that
    command run as printed, single-trajectory protocols, the validation headline in bold."""
    from glimpse.results import MAIN_COMMAND_MARK, render_main_command

    mark = f"python scripts/train_ram.py ({MAIN_COMMAND_MARK})"
    rows = [
        _row("ram", "single-mean", "1.38", "1.70", "70 epochs", command=mark),
        _row("ram", "single-sampled", "1.65", "1.60", "70 epochs", command=mark),
        _row("ram", "mc10", "0.70", "0.90", "70 epochs", command=mark),
        _row("ram", "single-mean", "1.12", "1.51", "100 epochs"),  # another command
    ]
    body = render_main_command(rows).splitlines()[2:]
    assert len(body) == 2
    assert "| **single-sampled** (headline) | **1.65** |" in body[1]
    assert "| single-mean | 1.38 |" in body[0]


def test_budget_label_tells_apart_budgets_that_begin_alike():
    from glimpse.results import budget_label

    assert budget_label("70 epochs") == "70 epochs"
    assert budget_label("70 epochs, bf16") == "70 epochs, bf16"
    assert budget_label("15 epochs, --location-gradient head") == "15 epochs, head"
    assert budget_label("30 epochs, --per-step-loss") == "30 epochs, per-step loss"
    assert budget_label("40 epochs, centre start") == "40 epochs, centre start"
    assert budget_label("40 epochs, σ 0.3") == "40 epochs, σ 0.3"
    assert budget_label("100 epochs, --std-final 0.05") == "100 epochs, σ annealed"
    label = budget_label("30 epochs, stopped by patience after 21 validations")
    assert label == "30 epochs, patience"
    assert budget_label("300 batches of 64, widths 16-32-64") == "300 batches of 64"


def test_pareto_leaves_out_probe_rows(tmp_path, monkeypatch):
    import glimpse.results as results

    base = {
        "task": "mnist",
        "method": "soft-none",
        "protocol": "deterministic",
        "test_error_pct": "1.00",
        "val_error_pct": "1.00",
        "inference_flops_per_image": "1000000",
    }
    rows = [
        {**base, "budget": "20 epochs"},
        {**base, "budget": "4 epochs (probe, val and test on their first 2,000 images)"},
    ]
    drawn = []
    real = results._finish_panel

    def spy(ax, task, xlabel):
        drawn.extend(ax.get_legend_handles_labels()[1])
        real(ax, task, xlabel)

    monkeypatch.setattr(results, "_finish_panel", spy)
    assert results.plot_pareto(rows, tmp_path / "p.png") is not None
    assert drawn == ["soft-none (20 epochs)"]
    assert results.plot_pareto(rows[1:], tmp_path / "q.png") is None


def test_coverage_names_each_cells_best_budget_and_what_is_missing():
    """Issue 21's coverage map: per (method, dataset) the budget best on validation, with
    the patience tag and training seeds; blocks without rows are listed, DRAM is n/a, and
    readout and probe rows never fill a cell."""
    from glimpse.results import render_coverage

    rows = [
        _row("ram", "single-mean", "3.00", "3.10"),
        _row("ram", "single-sampled", "2.00", "3.50"),
        _row("ram", "single-mean", "1.20", "1.50", "100 epochs"),
        _row(
            "soft-se",
            "deterministic",
            "0.80",
            "0.95",
            "20 epochs, stopped by patience",
            train_seeds="3",
        ),
        _row("soft-none", "deterministic", "0.70", "1.00", task="cluttered60"),
        _row(
            "soft-eca",
            "deterministic",
            "0.70",
            "1.00",
            "20 epochs, stopped by patience after 9 validations (1 of 3 seeds)",
            task="cluttered60",
            train_seeds="3",
        ),
        _row("glimpse-grid", "single-mean@2", "9.00", "9.00"),
        _row("glimpse-random", "single-mean", "9.00", "9.00", "4 epochs (probe)"),
    ]
    lines = render_coverage(rows, blocks=["se", "eca"]).splitlines()
    cells = {
        c[0]: c[1:] for c in ([x.strip() for x in ln.strip("|").split("|")] for ln in lines[2:])
    }
    assert lines[0] == "| method | mnist | translated60 | cluttered60 | cluttered100 |"
    assert cells["ram"] == ["100 epochs; 1 seed", "—", "—", "—"]
    assert cells["dram"] == ["n/a"] * 4
    assert cells["soft-se"][0] == "20 epochs, patience; 3 seeds"
    assert cells["soft-eca"] == ["—", "—", "20 epochs, patience in 1 of 3; 3 seeds", "—"]
    assert cells["soft-none"] == ["—", "—", "30 epochs; 1 seed", "—"]
    assert cells["glimpse-grid"] == cells["glimpse-random"] == ["—"] * 4
    assert list(cells)[-1].startswith("**filled (converged) of 11")
    # the eca row stopped by patience in one seed of three: filled, not converged
    assert list(cells.values())[-1] == ["**2 (1)**", "**0 (0)**", "**2 (0)**", "**0 (0)**"]
