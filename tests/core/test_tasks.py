"""The Task API: immutability, stable identity, serialization, TaskSplit and check_num_tasks."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from dataclasses import FrozenInstanceError
from typing import Any

import numpy as np
import pytest

from metarl.tasks import Task, TaskSampler, TaskSplit, check_num_tasks

# sha256 of the canonical JSON form, first 16 hex digits. A change here changes every saved
# task id (run folders, task splits), so it must be deliberate.
PINNED_ID = ("db97fcc590465f06", {"velocity": 1.3})


def rich_task() -> Task:
    """A task with every kind of value: float, int, bool, str, 1-d and 2-d arrays."""
    return Task(
        velocity=1.25,
        direction=-1,
        flag=True,
        name="cheetah",
        goal=np.array([0.5, -0.25]),
        scale=np.arange(6.0).reshape(2, 3),
        ids=np.array([[1, 2], [3, 4]]),
        mask=np.array([True, False, True]),
    )


# --------------------------------------------------------------------------------------------
# Immutability
# --------------------------------------------------------------------------------------------


def test_task_attributes_cannot_be_set_or_deleted() -> None:
    task = Task(velocity=1.0)
    with pytest.raises(AttributeError, match="immutable"):
        task.velocity = 2.0  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="immutable"):
        task._params = {}  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del task._params
    assert task == Task(velocity=1.0)
    assert task.id == Task(velocity=1.0).id


def test_task_items_cannot_be_assigned_or_deleted() -> None:
    task = Task(velocity=1.0)
    with pytest.raises(TypeError):
        task["velocity"] = 2.0  # type: ignore[index]
    with pytest.raises(TypeError):
        del task["velocity"]  # type: ignore[attr-defined]
    assert task["velocity"] == 1.0


def test_task_arrays_are_read_only_copies() -> None:
    goal = np.array([0.5, -0.25])
    task = Task(goal=goal)
    with pytest.raises(ValueError, match="read-only"):
        task["goal"][0] = 9.0  # type: ignore[index]
    goal[0] = 9.0  # the caller's array is not the task's
    assert task["goal"].tolist() == [0.5, -0.25]  # type: ignore[union-attr]
    assert task == Task(goal=[0.5, -0.25])


def test_task_values_are_canonicalized() -> None:
    task = Task(
        a=np.float64(0.5), b=np.int32(3), c=np.bool_(True), d=np.array(2.0), e=[1, 2], f=[1.0]
    )
    assert type(task["a"]) is float
    assert type(task["b"]) is int
    assert type(task["c"]) is bool
    assert type(task["d"]) is float  # 0-d arrays become scalars
    assert task["e"].dtype == np.int64  # type: ignore[union-attr]
    assert task["f"].dtype == np.float64  # type: ignore[union-attr]
    assert list(task) == sorted(task)  # keys in sorted order


# --------------------------------------------------------------------------------------------
# Identity
# --------------------------------------------------------------------------------------------


def test_equality_and_hash_ignore_construction_order() -> None:
    a = Task({"x": 1.0, "goal": [0.1, 0.2]})
    b = Task(goal=np.array([0.1, 0.2]), x=1.0)
    assert a == b
    assert hash(a) == hash(b)
    assert a.id == b.id
    assert len({a, b}) == 1
    assert a != Task(x=1.0, goal=[0.1, 0.3])
    assert a != {"x": 1.0, "goal": [0.1, 0.2]}  # a Task equals only Tasks


def test_value_type_is_part_of_identity() -> None:
    assert Task(direction=1) != Task(direction=1.0)
    assert Task(direction=1).id != Task(direction=1.0).id
    assert Task(flag=True) != Task(flag=1)
    assert Task(goal=[1, 2]) != Task(goal=[1.0, 2.0])


def test_id_is_pinned() -> None:
    expected, params = PINNED_ID
    assert Task(params).id == expected
    assert len(rich_task().id) == 16
    assert all(c in "0123456789abcdef" for c in rich_task().id)


def test_id_is_stable_across_processes() -> None:
    code = (
        "import numpy as np\n"
        "from metarl.tasks import Task\n"
        "t = Task(velocity=1.25, direction=-1, flag=True, name='cheetah',"
        " goal=np.array([0.5, -0.25]), scale=np.arange(6.0).reshape(2, 3),"
        " ids=np.array([[1, 2], [3, 4]]), mask=np.array([True, False, True]))\n"
        "print(t.id)\n"
        "print(Task(velocity=1.3).id)\n"
    )
    ids = set()
    for hash_seed in ("1", "2"):  # str hashing differs between these processes
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        ids.add(tuple(out.stdout.split()))
    assert ids == {(rich_task().id, PINNED_ID[0])}


# --------------------------------------------------------------------------------------------
# Serialization
# --------------------------------------------------------------------------------------------


def assert_same_task(a: Task, b: Task) -> None:
    assert a == b
    assert a.id == b.id
    for key in a:
        assert type(a[key]) is type(b[key])
        if isinstance(a[key], np.ndarray):
            assert a[key].dtype == b[key].dtype  # type: ignore[union-attr]
            assert a[key].shape == b[key].shape  # type: ignore[union-attr]
            np.testing.assert_array_equal(a[key], b[key])
            assert not b[key].flags.writeable  # type: ignore[union-attr]


def test_pickle_round_trip() -> None:
    task = rich_task()
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        assert_same_task(task, pickle.loads(pickle.dumps(task, protocol=protocol)))


def test_json_round_trip() -> None:
    task = rich_task()
    text = task.to_json()
    assert json.loads(text)["scale"] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert json.loads(text)["direction"] == -1
    assert_same_task(task, Task.from_json(text))
    assert_same_task(task, Task.from_dict(task.to_dict()))
    assert_same_task(task, Task.from_dict(json.loads(json.dumps(task.to_dict()))))


def test_float_values_survive_json_exactly() -> None:
    rng = np.random.default_rng(0)
    task = Task(velocity=float(rng.uniform(0, 3)), goal=rng.normal(size=3))
    assert_same_task(task, Task.from_json(task.to_json()))


def test_from_json_rejects_non_objects() -> None:
    with pytest.raises(ValueError, match="object of parameters"):
        Task.from_json("[1, 2]")


def test_repr_is_readable() -> None:
    assert repr(Task(velocity=1.3)) == "Task(velocity=1.3)"
    assert repr(Task(direction=-1, name="x", on=True)) == "Task(direction=-1, name='x', on=True)"
    assert repr(Task(m=np.array([[1, 2], [3, 4]]))) == "Task(m=[[1, 2], [3, 4]])"
    big = repr(Task(scale=np.arange(10.0)))
    assert big == "Task(scale=array(shape=(10,), mean=4.5))"
    assert "\n" not in repr(rich_task())


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [1, "", None])
def test_bad_keys_raise(key: Any) -> None:
    with pytest.raises(TypeError, match="non-empty strings"):
        Task({key: 1.0})


@pytest.mark.parametrize(
    "value",
    [None, {"a": 1}, object(), [1, "x"], 1 + 2j, [[1.0, 2.0], [3.0]]],
    ids=["none", "dict", "object", "mixed", "complex", "ragged"],
)
def test_bad_values_raise_naming_the_key(value: Any) -> None:
    with pytest.raises(TypeError, match="'speed'"):
        Task(speed=value)


def test_non_mapping_and_duplicate_parameters_raise() -> None:
    with pytest.raises(TypeError, match="mapping"):
        Task([("velocity", 1.0)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"\['velocity'\] twice"):
        Task({"velocity": 1.0}, velocity=2.0)


# --------------------------------------------------------------------------------------------
# check_num_tasks
# --------------------------------------------------------------------------------------------


def test_check_num_tasks_accepts_positive_ints() -> None:
    assert check_num_tasks(1) == 1
    assert check_num_tasks(np.int64(40)) == 40
    assert type(check_num_tasks(np.int64(40))) is int


@pytest.mark.parametrize("n", [0, -1, -40])
def test_check_num_tasks_rejects_non_positive(n: int) -> None:
    with pytest.raises(ValueError, match=rf"my_sampler.*positive, got {n}"):
        check_num_tasks(n, "my_sampler")


@pytest.mark.parametrize("n", [2.0, 1.5, "3", True, None])
def test_check_num_tasks_rejects_non_ints(n: Any) -> None:
    with pytest.raises(TypeError, match=r"my_sampler.*an int"):
        check_num_tasks(n, "my_sampler")


# --------------------------------------------------------------------------------------------
# TaskSplit
# --------------------------------------------------------------------------------------------


class GoalSampler:
    """A minimal custom sampler: goals in the unit square (the TaskSampler protocol)."""

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        check_num_tasks(n)
        return [Task(goal=g) for g in rng.uniform(-1.0, 1.0, size=(n, 2))]

    def make_env(self, task: Task | None = None) -> Any:
        raise NotImplementedError("not needed for splits")


def make_split() -> TaskSplit:
    return TaskSplit(
        name="tiny",
        train=(Task(velocity=0.5), Task(velocity=1.0, goal=[1.0, 2.0])),
        test=(Task(velocity=2.0),),
        source="hand-written",
    )


def test_split_json_round_trip(tmp_path: Any) -> None:
    split = make_split()
    assert TaskSplit.from_dict(json.loads(json.dumps(split.to_dict()))) == split
    path = tmp_path / "split.json"
    split.save(path)
    loaded = TaskSplit.load(path)
    assert loaded == split
    assert [t.id for t in loaded.train] == [t.id for t in split.train]
    assert loaded.source == "hand-written"
    assert loaded.disjoint is True


def test_split_converts_mappings_to_tasks() -> None:
    split = TaskSplit("m", train=({"velocity": 0.5},), test=({"velocity": 1.5},))  # type: ignore[arg-type]
    assert split.train == (Task(velocity=0.5),)
    assert isinstance(split.test[0], Task)


def test_split_is_frozen() -> None:
    split = make_split()
    with pytest.raises(FrozenInstanceError):
        split.name = "other"  # type: ignore[misc]


def test_split_rejects_overlap_unless_not_disjoint(tmp_path: Any) -> None:
    both = (Task(direction=1.0), Task(direction=-1.0))
    with pytest.raises(ValueError, match=r"'dir'.*2 task\(s\) are in both"):
        TaskSplit("dir", train=both, test=both)
    split = TaskSplit("dir", train=both, test=both, disjoint=False)
    path = tmp_path / "dir.json"
    split.save(path)
    loaded = TaskSplit.load(path)
    assert loaded == split
    assert loaded.disjoint is False


def test_split_from_dict_names_missing_keys() -> None:
    with pytest.raises(ValueError, match=r"\['test'\]"):
        TaskSplit.from_dict({"name": "x", "train": []})


def test_split_from_sampler_is_deterministic() -> None:
    sampler = GoalSampler()
    assert isinstance(sampler, TaskSampler)
    a = TaskSplit.from_sampler(sampler, n_train=10, n_test=4, seed=1337)
    b = TaskSplit.from_sampler(sampler, n_train=10, n_test=4, seed=1337)
    c = TaskSplit.from_sampler(sampler, n_train=10, n_test=4, seed=7)
    assert a == b
    assert a != c
    assert (len(a.train), len(a.test)) == (10, 4)
    assert a.name == "seed1337-10/4"
    assert "default_rng(1337)" in a.source
    # The first n_train draws are the training tasks, the rest the test tasks.
    drawn = sampler.sample(14, np.random.default_rng(1337))
    assert list(a.train) == drawn[:10]
    assert list(a.test) == drawn[10:]


@pytest.mark.parametrize(("n_train", "n_test"), [(0, 4), (10, 0), (-1, 4)])
def test_split_from_sampler_rejects_bad_counts(n_train: int, n_test: int) -> None:
    with pytest.raises(ValueError, match=r"TaskSplit\.from_sampler"):
        TaskSplit.from_sampler(GoalSampler(), n_train=n_train, n_test=n_test, seed=0)
