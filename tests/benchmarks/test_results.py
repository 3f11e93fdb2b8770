"""The results suite (benchmarks/results.py): cells, run, resume and the report."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from metarl.evaluation import PUBLISHED_MAML_TRPO, EvalResult, Protocol, student_t_quantile
from metarl.tasks import Task

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "results.py"


def _load() -> object:
    spec = importlib.util.spec_from_file_location("metarl_results_suite", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


R = _load()

TINY = R.Cell(  # type: ignore[attr-defined]
    "tiny-maml",
    "maml-trpo",
    "Point2DNav",
    "maml-rllab",
    "quick",
    flags=(
        "--iterations",
        "6",
        "--meta-batch-size",
        "2",
        "--episodes-per-task",
        "2",
        "--horizon",
        "10",
        "--hidden-sizes",
        "8",
    ),
    protocol="quick",
    eval_overrides={"num_tasks": 2, "num_steps": 1, "episodes_per_step": 2, "seeds": [0]},
    seeds=(0, 1),
    group="tiny group",
    checkpoint_every=1,
)


def _rows_without_times(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


# -- budgets -------------------------------------------------------------------------------------


def test_steps_per_iteration_counts_every_sampled_episode() -> None:
    from metarl.agents import MAMLTRPO, RL2PPO, ReptilePPO

    maml = MAMLTRPO.preset("paper", "Point2DNav")
    assert R.steps_per_iteration("maml-trpo", maml, 100) == 2 * 20 * 20 * 100
    reptile = ReptilePPO.preset("default", "Point2DNav")
    expected = (reptile.num_adapt_steps + 1) * reptile.meta_batch_size
    assert R.steps_per_iteration("reptile-ppo", reptile, 100) == (
        expected * reptile.episodes_per_task * 100
    )
    rl2 = RL2PPO.preset("default", "Point2DNav")
    assert R.steps_per_iteration("rl2-ppo", rl2, 100) == (
        rl2.meta_batch_size * rl2.trials_per_task * rl2.episodes_per_trial * 100
    )


def test_cells_of_a_group_train_on_the_same_budget() -> None:
    """Every group compares its agents at equal experience: each cell's seed samples the
    group's budget (a cell's own, or what a preset's iterations sample) within one iteration."""
    groups: dict[str, list[tuple[int, int]]] = {}
    budgets: dict[str, int] = {}
    for cell in R.CELLS.values():
        total, per = R.env_steps(cell)
        groups.setdefault(cell.group, []).append((total, per))
        budgets[cell.group] = max(budgets.get(cell.group, 0), cell.budget or total)
    assert len(groups["Point2DNav (maml-rllab, H = 100), 8M env steps"]) == 3
    assert len(groups["HalfCheetahParams (pearl, H = 200), 6M env steps"]) == 3
    assert len(groups["HalfCheetahDir (maml-100hz, H = 200), 32M env steps"]) == 3
    assert len(groups["HalfCheetahVel (maml-100hz, H = 200), 76M env steps"]) == 3
    for group, cells in groups.items():
        for total, per in cells:
            assert budgets[group] <= total < budgets[group] + per, group


# -- run -----------------------------------------------------------------------------------------


def test_run_trains_evaluates_and_writes_the_result_files(tmp_path: Path) -> None:
    record = R.run_seed(TINY, 0, tmp_path / "results", tmp_path / "runs", progress=False)
    out = tmp_path / "results" / "tiny-maml" / "seed-0"
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "eval.csv",
        "eval.json",
        "metrics.csv",
        "run.json",
    ]
    assert record["status"] == "complete"
    assert record["iterations_done"] == record["iterations"] == 6
    saved = json.loads((out / "run.json").read_text())
    assert saved["env_steps"] == sum(
        int(float(r["env_steps"])) for r in csv.DictReader((out / "metrics.csv").open())
    )
    assert saved["machine"]["cores"] == os.cpu_count()
    assert json.loads((out / "eval.json").read_text())["iteration"] == 6
    assert not list(out.glob("*.pt"))  # no checkpoints among the committed files
    # A second run of a finished seed changes nothing.
    before = (out / "metrics.csv").read_text()
    again = R.run_seed(TINY, 0, tmp_path / "results", tmp_path / "runs", progress=False)
    assert len(again["sessions"]) == len(record["sessions"]) == 1
    assert (out / "metrics.csv").read_text() == before


def test_committed_files_name_no_folder_of_this_machine() -> None:
    here = f"{R.ROOT}/runs/results/c/seed-0"
    assert R.portable(f'{{"run_dir": "{here}"}}') == '{"run_dir": "runs/results/c/seed-0"}'
    assert R.portable("/elsewhere/runs") == "/elsewhere/runs"


def test_a_folder_without_checkpoint_is_started_again(tmp_path: Path) -> None:
    dead = tmp_path / "runs" / "tiny-maml" / "seed-0"
    dead.mkdir(parents=True)
    (dead / "config.json").write_text("{}")
    record = R.run_seed(TINY, 0, tmp_path / "results", tmp_path / "runs", progress=False)
    assert record["status"] == "complete"


@pytest.mark.slow
def test_a_killed_seed_resumes_to_the_same_result(tmp_path: Path) -> None:
    unbroken = tmp_path / "a"
    R.run_seed(TINY, 1, unbroken / "results", unbroken / "runs", progress=False)

    broken = tmp_path / "b"
    code = (
        "import sys, importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('r', {str(SCRIPT)!r})\n"
        "r = importlib.util.module_from_spec(spec); sys.modules['r'] = r\n"
        "spec.loader.exec_module(r)\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_results import TINY\n"
        f"r.run_seed(TINY, 1, r.Path({str(broken / 'results')!r}), "
        f"r.Path({str(broken / 'runs')!r}), progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path)
    metrics = broken / "runs" / "tiny-maml" / "seed-1" / "metrics.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(metrics.read_text().splitlines()) - 1 < 6  # stopped mid-cell
    # Published as unfinished, with its metrics so far, and reported so.
    (record,) = R.sync(broken / "results", broken / "runs", cells=[TINY])
    assert record["status"] == "unfinished" and 1 <= record["iterations_done"] < 6
    assert "resume_command" in record
    text = R.report(broken / "results", broken / "docs").read_text()
    assert f"seed 1 unfinished ({record['iterations_done']}/6 iterations)" in text

    record = R.run_seed(TINY, 1, broken / "results", broken / "runs", progress=False)
    assert record["status"] == "complete"
    a = unbroken / "results" / "tiny-maml" / "seed-1"
    b = broken / "results" / "tiny-maml" / "seed-1"
    assert _rows_without_times(a / "metrics.csv") == _rows_without_times(b / "metrics.csv")
    ra = json.loads((a / "eval.json").read_text())["returns"]
    rb = json.loads((b / "eval.json").read_text())["returns"]
    assert ra == rb


# -- report --------------------------------------------------------------------------------------


def _fixture_seed(
    folder: Path,
    seed: int,
    step_values: list[float],
    status: str,
    success: list[float] | None = None,
) -> None:
    """A seed's result files as ``run`` writes them, with chosen meta-test returns (and, for
    an env that reports one, success rates)."""
    folder.mkdir(parents=True)
    iterations = 4
    with (folder / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(
            f, ["iteration", "meta/return_post_adapt", "env_steps", "time/iteration"]
        )
        writer.writeheader()
        done = iterations if status == "complete" else 2
        for i in range(done):
            writer.writerow(
                {
                    "iteration": i,
                    "meta/return_post_adapt": -40 + 5 * i + seed,
                    "env_steps": 1000,
                    "time/iteration": 30.0,
                }
            )
    record = {
        "status": status,
        "cell": "fixture",
        "seed": seed,
        "algo": "maml-trpo",
        "family": "Point2DNav",
        "variant": "maml-rllab",
        "preset": "paper",
        "planned_seeds": [0, 1, 2],
        "group": "Fixture group",
        "iterations": iterations,
        "iterations_done": done,
        "env_steps": 1000 * done,
        "train_seconds": 30.0 * done,
        "machine": {"cpu": "Test CPU"},
    }
    (folder / "run.json").write_text(json.dumps(record))
    if status != "complete":
        return
    reference = PUBLISHED_MAML_TRPO["Point2DNav"]
    # Two tasks per step whose mean is the chosen value.
    returns = np.array([[[v - 1.0, v + 1.0] for v in step_values]])
    result = EvalResult(
        run="fixture",
        algo="maml-trpo",
        family="Point2DNav",
        variant="maml-rllab",
        horizon=100,
        protocol=Protocol("paper", num_tasks=2, num_steps=len(step_values) - 1, seeds=(0,)),
        iteration=iterations,
        checkpoint="latest.pt",
        recurrent=False,
        tasks=[Task({"goal": [0.1, 0.2]}), Task({"goal": [-0.3, 0.0]})],
        returns=returns,
        steps_per_step=2000,
        reference=reference,
        success=None if success is None else np.array([[[v, v] for v in success]]),
    )
    (folder / "eval.json").write_text(json.dumps(result.to_json()))


def test_report_tables_figures_published_and_missing_seeds(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _fixture_seed(results / "fixture" / "seed-0", 0, [-40.0, -12.0, -5.0, -4.0], "complete")
    _fixture_seed(results / "fixture" / "seed-1", 1, [-38.0, -10.0, -3.0, -2.0], "complete")
    _fixture_seed(results / "fixture" / "seed-5", 5, [], "unfinished")
    # A figure of a heading the report no longer has goes; other files stay.
    (tmp_path / "docs" / "figures").mkdir(parents=True)
    stale = tmp_path / "docs" / "figures" / "results-renamed-group-learning.png"
    stale.write_bytes(b"old")
    other = tmp_path / "docs" / "figures" / "demo.png"
    other.write_bytes(b"kept")
    out = R.report(results, tmp_path / "docs")
    assert not stale.exists() and other.read_bytes() == b"kept"
    text = out.read_text()
    assert "## Fixture group" in text
    # Mean over the two seeds and its Student-t interval (one degree of freedom).
    half = student_t_quantile(0.975, 1) * np.std([-12.0, -10.0], ddof=1) / np.sqrt(2)
    # The gain over step 0 is paired: seed 0 gains 28, seed 1 gains 28, so no spread.
    assert (
        f"| 1 | -11.0 [{-11.0 - half:.1f}, {-11.0 + half:.1f}] | +28.0 [+28.0, +28.0] "
        "| -12.0 | -10.0 | -11.7 |"
    ) in text
    assert "| 0 | -39.0" in text and "| -40.4 |" in text  # the published column
    assert "seed 2 missing" in text
    assert "seed 5 unfinished (2/4 iterations)" in text
    assert "4 iterations, 4.0k env steps and 2 min per seed" in text
    for kind in ("learning", "adaptation"):
        png = tmp_path / "docs" / "figures" / f"results-fixture-group-{kind}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        import imageio.v3 as iio

        image = iio.imread(png)
        assert image.ndim == 3 and image.shape[0] > 100
        assert image.std() > 10  # something is drawn
    assert "![learning curves](figures/results-fixture-group-learning.png)" in text


def test_report_rewrites_the_readme_table(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _fixture_seed(results / "fixture" / "seed-0", 0, [-40.0, -12.0, -5.0, -4.0], "complete")
    _fixture_seed(results / "fixture" / "seed-1", 1, [-38.0, -10.0, -3.0, -2.0], "complete")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- results:begin -->\nold\n<!-- results:end -->\n\nafter\n")
    R.report(results, tmp_path / "docs", readme)
    text = readme.read_text()
    assert "old" not in text and text.endswith("<!-- results:end -->\n\nafter\n")
    row = "| `fixture` | maml-trpo | Point2DNav (maml-rllab) | 4.0k | 2 "
    assert row + "| -39.0 / -11.0 / -4.0 / -3.0 | -40.4 / -11.7 / -3.3 / -3.2 |" in text
    # An env that reports success (Meta-World): its rates beside the returns.
    _fixture_seed(
        results / "fixture" / "seed-2", 2, [-40.0, -12.0, -5.0, -4.0], "complete", [0.5] * 4
    )
    R.report(results, tmp_path / "docs", readme)
    assert "| 3 | -39.3 / -11.3 / -4.3 / -3.3 |" in readme.read_text()  # not every seed has it
    for path in (results / "fixture").glob("seed-[01]"):
        shutil.rmtree(path)
    R.report(results, tmp_path / "docs", readme)
    assert "| -40.0 / -12.0 / -5.0 / -4.0 (success 0.50 / 0.50 / 0.50 / 0.50) |" in (
        readme.read_text()
    )
    # An ablation is reported in docs/results.md only.
    record_path = results / "fixture" / "seed-2" / "run.json"
    record = json.loads(record_path.read_text())
    record["group"] = "Fixture ablation: the baseline"
    record_path.write_text(json.dumps(record))
    R.report(results, tmp_path / "docs", readme)
    assert "`fixture`" not in readme.read_text()
    assert "`fixture`" in (tmp_path / "docs" / "results.md").read_text()
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="results:begin"):
        R.report(results, tmp_path / "docs", readme)


def test_report_includes_the_findings_file(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _fixture_seed(results / "fixture" / "seed-0", 0, [-40.0, -12.0], "complete")
    (results / "findings.md").write_text("## What we found\n\nThe action scale matters.\n")
    text = R.report(results, tmp_path / "docs").read_text()
    assert text.rstrip().endswith("The action scale matters.")


def test_unknown_cell_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert R.main(["run", "point2d-maml-trpo-papr"]) == 2
    err = capsys.readouterr().err
    assert "unknown cell 'point2d-maml-trpo-papr'" in err and "point2d-maml-trpo-paper" in err
