"""The task table (:mod:`glimpse.tasks`): every task defined once, and every reader agrees.

The table is checked against the data it names (image size, classes, targets, ``limit``),
against the Gymnasium registry (every ``Glimpse/`` id comes from it, with its kwargs), and
against each place that used to hold its own copy: the RAM/DRAM and PPO configs, the parts
trainer, the soft trainer, the comparison and the learning curves.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import get_args, get_type_hints

import gymnasium as gym
import pytest

import envs
from agents.config import TASK_IDS, HardTrainConfig, task_defaults
from agents.parts_train import PROXY_TASK, PartsTrainConfig
from agents.ppo_train import PPOTrainConfig
from envs import ImageSource
from glimpse.experiments import curves
from glimpse.experiments.compare import ALL_DATASETS, CompareConfig, HardMethod
from glimpse.tasks import KINDS, TASKS, Task, get_task, task_for_env_id, tasks_of
from soft_baselines.train import SOFT_DATASETS, SoftTrainConfig

REPO = Path(__file__).resolve().parent.parent
NAMES = list(TASKS)
ONE_LOCATION = [t.name for t in tasks_of("paper", "proxy")]

# Written out independently of the table: name -> (env id, kind, targets, classes).
EXPECTED = {
    "mnist": ("Glimpse/MNIST-v0", "paper", 1, 10),
    "translated60": ("Glimpse/TranslatedMNIST60-v0", "paper", 1, 10),
    "cluttered60": ("Glimpse/ClutteredMNIST60-v0", "paper", 1, 10),
    "cluttered100": ("Glimpse/ClutteredMNIST100-v0", "paper", 1, 10),
    "multimnist": ("Glimpse/MultiMNIST-v0", "paper", 2, 10),
    "dram-pairs": ("Glimpse/DRAMPairsMNIST-v0", "paper", 1, 55),
    "dram-addition": ("Glimpse/DRAMAdditionMNIST-v0", "paper", 1, 19),
    "stn-cluttered60": ("Glimpse/STNClutteredMNIST60-v0", "paper", 1, 10),
    "twodigit100": ("Glimpse/TwoDigit100-v0", "proxy", 1, 100),
    "twodigit100-parts": ("Glimpse/TwoDigitParts-v0", "parts", 1, 100),
}


def hard_config(name: str, cls: type = HardTrainConfig, **kw):
    agent = "dram" if get_task(name).num_targets > 1 else "ram"
    return cls(task=name, agent=agent, run_name="t", **kw).resolved()


# ------------------------------------------------------------------------ the table


def test_the_table_holds_the_expected_tasks_in_order():
    assert list(EXPECTED) == NAMES
    for name, (env_id, kind, targets, classes) in EXPECTED.items():
        t = TASKS[name]
        assert (t.name, t.env_id, t.kind, t.num_targets, t.num_classes) == (
            name,
            env_id,
            kind,
            targets,
            classes,
        )
        assert t.reference and t.description


@pytest.mark.parametrize("name", NAMES)
def test_every_task_resolves_by_name_and_by_env_id(name):
    task = get_task(name)
    assert isinstance(task, Task) and task.name == name
    assert task_for_env_id(task.env_id) is task
    assert task.env_id.startswith("Glimpse/") and task.env_id.endswith("-v0")


def test_names_and_env_ids_are_unique_and_the_table_is_read_only():
    ids = [t.env_id for t in TASKS.values()]
    assert len(set(ids)) == len(ids) == len(NAMES)
    with pytest.raises(TypeError):
        TASKS["new"] = TASKS["mnist"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        TASKS["mnist"].num_glimpses = 3  # type: ignore[misc]


def test_tasks_of_splits_the_table_by_kind():
    assert tasks_of() == tuple(TASKS.values())
    assert [t.name for k in KINDS for t in tasks_of(k)] == NAMES
    assert [t.name for t in tasks_of("parts")] == ["twodigit100-parts"]
    assert [t.name for t in tasks_of("paper")] == [
        n for n, e in EXPECTED.items() if e[1] == "paper"
    ]


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: get_task("mnsit"), r"^unknown task 'mnsit'; valid names: mnist, translated60, "),
        (lambda: get_task(None), r"^unknown task None; valid names: mnist, "),
        (
            lambda: task_for_env_id("Glimpse/Nope-v0"),
            r"^no task is registered as 'Glimpse/Nope-v0'; task ids: Glimpse/MNIST-v0, ",
        ),
        (lambda: tasks_of("papers"), r"^unknown task kind\(s\) \['papers'\]; valid: paper, "),
    ],
)
def test_unknown_names_give_a_one_line_error_listing_the_valid_ones(call, pattern):
    with pytest.raises(ValueError, match=pattern) as err:
        call()
    assert "\n" not in str(err.value)
    if "valid names" in str(err.value):
        assert str(err.value).endswith(", ".join(NAMES))


def test_env_kwargs_leave_out_the_envs_defaults_only():
    assert get_task("mnist").env_kwargs() == {
        "source": "mnist",
        "glimpse_size": 8,
        "num_scales": 1,
        "num_glimpses": 6,
    }
    assert get_task("multimnist").env_kwargs() == {
        "source": "multimnist",
        "glimpse_size": 12,
        "num_scales": 4,
        "num_glimpses": 8,
        "num_targets": 2,
        "context_size": 25,
    }
    assert get_task("twodigit100-parts").env_kwargs() == {
        "source": "twodigit100",
        "glimpse_size": 28,
        "num_scales": 2,
        "num_glimpses": 2,
        "num_classes": 100,
        "num_parts": 2,
        "context_size": 25,
    }


@pytest.mark.parametrize("name", NAMES)
def test_the_table_agrees_with_the_data_it_names(name, data_root):
    task = get_task(name)
    kw = {"limit": 4} if task.generated else {}
    ds = task.load("test", data_root, **kw)
    src = ImageSource.from_any(ds)
    assert src.image_shape == (1, *task.image_size)
    assert len(ds.classes) == task.num_classes
    assert src.num_targets == task.num_targets
    assert int(src.labels.max()) < task.num_classes
    if task.generated:
        assert len(src) == 4
    else:  # a real dataset takes no limit
        with pytest.raises(TypeError):
            task.load("test", data_root, limit=4)


# --------------------------------------------------------------------------- envs


def test_every_glimpse_gymnasium_id_comes_from_the_table_and_vice_versa():
    registered = {k: s for k, s in gym.registry.items() if k.startswith("Glimpse/")}
    assert set(registered) == {t.env_id for t in TASKS.values()}
    for env_id, spec in registered.items():
        task = task_for_env_id(env_id)
        assert spec.kwargs == task.env_kwargs(), env_id
        assert spec.entry_point == "envs.single:GlimpseEnv"
        assert spec.vector_entry_point == "envs:make_vector_env"


def test_envs_views_are_the_table_by_kind():
    for view, kind in (
        (envs.TASKS, "paper"),
        (envs.PROXY_TASKS, "proxy"),
        (envs.PART_TASKS, "parts"),
    ):
        assert view == {t.env_id: t.env_kwargs() for t in tasks_of(kind)}


def test_the_envs_docstring_table_lists_the_tables_settings():
    rows = re.findall(
        r"^\| ``(Glimpse/[^`]+)`` \|[^|]+\| (\d+)[^|]*\| (\d+) \| (\d+) \|$", envs.__doc__, re.M
    )
    assert [r[0] for r in rows] == [t.env_id for t in TASKS.values()]
    for env_id, steps, g, k in rows:
        t = task_for_env_id(env_id)
        assert (t.num_glimpses, t.glimpse_size, t.num_scales) == (int(steps), int(g), int(k))


def test_the_table_imports_nothing_above_the_ground_floor():
    code = (
        "import sys, glimpse.tasks; "
        "above = {'envs', 'agents', 'soft_baselines'}; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & above))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------- readers


def test_the_hard_trainers_task_choices_are_the_tables_one_location_tasks():
    assert get_args(get_type_hints(HardTrainConfig)["task"]) == tuple(ONE_LOCATION)
    assert TASK_IDS == {n: TASKS[n].env_id for n in ONE_LOCATION}
    with pytest.raises(ValueError, match=r"unknown task 'twodigit100-parts' for RAM/DRAM"):
        task_defaults("twodigit100-parts")


@pytest.mark.parametrize("name", ONE_LOCATION)
def test_hard_config_defaults_are_the_tables(name):
    task = get_task(name)
    cfg = hard_config(name)
    assert (cfg.num_glimpses, cfg.glimpse_size, cfg.num_scales) == (
        task.num_glimpses,
        task.glimpse_size,
        task.num_scales,
    )
    assert cfg.task_num_classes() == task.num_classes
    mdp = cfg.mdp(task.num_targets)
    assert (mdp.num_glimpses, mdp.num_classes, mdp.num_targets) == (
        task.num_glimpses,
        task.num_classes,
        task.num_targets,
    )
    # explicit settings still win over the table's
    assert hard_config(name, num_glimpses=3).num_glimpses == 3


@pytest.mark.parametrize(
    ("name", "glimpses", "g", "k", "classes"),
    [
        ("dram-pairs", 4, 12, 4, 55),
        ("dram-addition", 4, 12, 4, 19),
        ("stn-cluttered60", 8, 12, 3, 10),
    ],
)
@pytest.mark.parametrize("agent", ["ram", "dram"])
def test_the_dram_and_stn_paper_tasks_give_their_glimpse_defaults(
    name, glimpses, g, k, classes, agent
):
    """Written out apart from the table: the settings we read for each paper's task (RAM
    is the DRAM paper's baseline on its single-label MNIST tasks, so both agents train)."""
    cfg = HardTrainConfig(task=name, agent=agent, run_name="t").resolved()
    assert (cfg.num_glimpses, cfg.glimpse_size, cfg.num_scales) == (glimpses, g, k)
    mdp = cfg.mdp(1)
    assert (mdp.num_classes, mdp.num_targets) == (classes, 1)
    assert mdp.context_size == (25 if agent == "dram" else 0)
    task = get_task(name)
    assert ("1412.7755" if name.startswith("dram") else "1506.02025") in task.reference
    assert "unverified" in task.reference


def test_ram_refuses_multi_target_tasks():
    with pytest.raises(ValueError, match="use --agent dram for multimnist"):
        HardTrainConfig(task="multimnist", agent="ram").resolved()


@pytest.mark.parametrize("name", ONE_LOCATION)
def test_ppo_episode_steps_use_the_tables_targets(name):
    cfg = hard_config(name, PPOTrainConfig)
    assert cfg.episode_steps() == get_task(name).num_glimpses * get_task(name).num_targets
    assert cfg.episode_steps() == (16 if name == "multimnist" else cfg.num_glimpses)


def test_curves_convert_episodes_with_the_tables_targets():
    for name in ONE_LOCATION:
        steps = curves._episode_steps({"num_glimpses": 5, "task": name})
        assert steps == 5 * get_task(name).num_targets
    assert curves._episode_steps({"num_glimpses": 5, "task": "multimnist"}) == 10
    assert curves._episode_steps({"num_glimpses": 5, "task": "cub"}) == 5  # not a table task
    assert curves._episode_steps({"num_glimpses": 5}) == 5


def test_parts_trainer_defaults_are_the_parts_task():
    task = task_for_env_id(PROXY_TASK)
    assert task.kind == "parts"
    mdp = PartsTrainConfig(run_name="t").resolved().mdp(task.num_classes)
    got = (mdp.glimpse_size, mdp.num_scales, mdp.context_size, mdp.num_glimpses, mdp.num_parts)
    want = (
        task.glimpse_size,
        task.num_scales,
        task.context_size,
        task.num_glimpses,
        task.num_parts,
    )
    assert got == want


def test_soft_trainer_takes_the_single_target_one_location_tasks():
    assert SOFT_DATASETS == (
        "mnist",
        "translated60",
        "cluttered60",
        "cluttered100",
        "dram-pairs",
        "dram-addition",
        "stn-cluttered60",
        "twodigit100",
    )
    assert SOFT_DATASETS == tuple(n for n in ONE_LOCATION if TASKS[n].num_targets == 1)
    with pytest.raises(ValueError, match=r"'multimnist'.*2 digits per image.*DRAM"):
        SoftTrainConfig(dataset="multimnist").resolved()
    with pytest.raises(ValueError, match=r"'twodigit100-parts' is not glimpse.data's"):
        SoftTrainConfig(dataset="twodigit100-parts").resolved()


def test_compare_reads_its_datasets_and_dram_tasks_from_the_table():
    assert ALL_DATASETS == (*(t.name for t in tasks_of("paper")), "cub")
    cc = CompareConfig()
    assert cc.dram_datasets == ("multimnist",)
    ram, dram = HardMethod("ram", "ram"), HardMethod("dram", "dram")
    assert ram.not_applicable("multimnist", cc) == "RAM reads one digit (DRAM covers multimnist)"
    assert ram.not_applicable("cluttered60", cc) is None
    assert dram.not_applicable("multimnist", cc) is None
    assert ram.not_applicable("cub", cc) == "no glimpse task for cub"
    assert ram.not_applicable("twodigit100-parts", cc) == "no glimpse task for twodigit100-parts"
