"""The meta-test: confidence intervals, protocol presets, rows and files, the SB3 baseline,
the published reference, run loading and the ``metarl eval`` command."""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metarl.cli import main
from metarl.envs import FamilyTaskSampler, make_family
from metarl.evaluation import (
    CSV_COLUMNS,
    EvalResult,
    Protocol,
    eval_dir,
    eval_name,
    evaluate_run,
    held_out_tasks,
    load_run,
    make_protocol,
    published_reference,
    sb3_baseline,
    settings_name,
    student_t_quantile,
    summarize,
    write_eval,
)
from metarl.plots import plot_adaptation
from metarl.runs import RunError, write_atomically
from metarl.sampling import make_sampler

ROOT = Path(__file__).resolve().parents[2]

HORIZON = 10  # the tiny runs' episode length (conftest.py)
TINY = {"num_tasks": 3, "num_steps": 2, "episodes_per_step": 2, "seeds": [0, 1]}


# -- statistics --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "dof", "expected"),
    [
        (0.975, 1, 12.706204736),
        (0.975, 2, 4.302652730),
        (0.975, 9, 2.262157163),
        (0.975, 30, 2.042272456),
        (0.95, 5, 2.015048373),
        (0.975, 100000, 1.959986),
    ],
)
def test_student_t_quantile_matches_tables(p: float, dof: int, expected: float) -> None:
    assert student_t_quantile(p, dof) == pytest.approx(expected, rel=1e-6)
    assert student_t_quantile(1 - p, dof) == pytest.approx(-expected, rel=1e-6)


def test_summary_is_mean_plus_minus_t_interval() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0])
    std = math.sqrt(5 / 3)
    half = 3.182446305 * std / 2.0  # t_{0.975, 3} * s / sqrt(4)
    assert (s.mean, s.n) == (2.5, 4)
    assert s.std == pytest.approx(std)
    assert (s.ci_low, s.ci_high) == (pytest.approx(2.5 - half), pytest.approx(2.5 + half))
    one = summarize([7.0])
    assert (one.mean, one.ci_low, one.ci_high, one.n) == (7.0, 7.0, 7.0, 1)
    with pytest.raises(ValueError, match="at least one"):
        summarize([])
    with pytest.raises(ValueError, match="non-finite"):
        summarize([1.0, math.nan])


# -- protocol ----------------------------------------------------------------------------------


def test_protocol_presets_and_overrides() -> None:
    paper = make_protocol("paper", "HalfCheetahVel")
    assert (paper.num_tasks, paper.num_steps, paper.episodes_per_step) == (40, 3, 20)
    assert paper.step_sizes == (0.1, 0.05, 0.05)
    assert make_protocol("paper", "AntDir").episodes_per_step == 40
    # The AntDir test script's later steps: learning rate 0.01 x 0.1.
    assert make_protocol("paper", "AntDir").step_sizes == (0.1, 0.001, 0.001)
    custom = make_protocol("quick", "Point2DNav", num_tasks=3, seeds=[4])
    assert (custom.name, custom.num_tasks, custom.seeds) == ("quick_num-tasks=3_seeds=4", 3, (4,))
    assert make_protocol("quick", "Point2DNav", num_tasks=None).name == "quick"
    # An override equal to the preset's value is no override; the paper's per-family changes
    # are part of the preset.
    assert make_protocol("quick", "Point2DNav", num_tasks=10, seeds=[0, 1]).name == "quick"
    assert make_protocol("paper", "AntDir").name == "paper"
    steps = make_protocol("paper", "HalfCheetahVel", num_steps=1, step_sizes=[0.2])
    assert steps.name == "paper_num-adapt-steps=1_step-sizes=0.2"
    with pytest.raises(ValueError, match="unknown evaluation protocol 'fast'"):
        make_protocol("fast", "Point2DNav")
    with pytest.raises(ValueError, match="num_tasks must be >= 1"):
        make_protocol("quick", "Point2DNav", num_tasks=0)
    with pytest.raises(ValueError, match="step_sizes must be one per adaptation step"):
        Protocol(num_steps=3, step_sizes=(0.1,))
    with pytest.raises(ValueError, match="has 40 test tasks"):
        held_out_tasks(make_family("Point2DNav"), Protocol(num_tasks=41))


def test_a_finite_task_set_repeats_its_tasks() -> None:
    # HalfCheetahDir has two tasks; the paper's 40 test tasks are 40 draws of them.
    tasks = held_out_tasks(make_family("HalfCheetahDir"), Protocol(num_tasks=5))
    assert [t["direction"] for t in tasks] == [1.0, -1.0, 1.0, -1.0, 1.0]


def test_published_reference_only_where_the_setting_matches() -> None:
    paper = make_protocol("paper", "Point2DNav")
    assert paper.episodes_per_step == 40  # the paper's test: 4000 steps per gradient step
    ref = published_reference("Point2DNav", "maml-rllab", 100, paper)
    assert ref is not None and ref.returns == (-40.4, -11.7, -3.3, -3.2)
    # The paper's point env scaled unit actions into its 0.1 step (rllab's normalize).
    assert published_reference("Point2DNav", "maml", 100, paper) is None
    assert published_reference("Point2DNav", "maml-rllab", HORIZON, paper) is None  # horizon
    quick = make_protocol("quick", "x")
    assert published_reference("Point2DNav", "maml-rllab", 100, quick) is None
    paper = make_protocol("paper", "HalfCheetahDir")
    assert published_reference("HalfCheetahVel", "pearl", 200, paper) is None  # task range
    # The paper's cheetah took one MuJoCo step per action (rllab), Gymnasium's v5 takes five.
    assert published_reference("HalfCheetahDir", "maml", 200, paper) is None
    cheetah = published_reference("HalfCheetahDir", "maml-100hz", 200, paper)
    assert cheetah is not None and cheetah.returns[1] == 293.2
    assert published_reference("HalfCheetahDir", "maml-rllab", 200, paper) is cheetah
    # Result files store the curve; those written when a curve had one variant still load.
    from dataclasses import asdict

    saved = json.loads((ROOT / "results/cheetah-dir-maml-trpo-paper/seed-0/eval.json").read_text())
    saved["reference"] = json.loads(json.dumps(asdict(cheetah)))
    assert EvalResult.from_json(saved).reference == cheetah
    saved["reference"] = {k: v for k, v in saved["reference"].items() if k != "variants"} | {
        "variant": "maml-100hz"
    }
    assert EvalResult.from_json(saved).reference.variants == ("maml-100hz",)
    assert published_reference("HumanoidDir", "pearl", 200, paper) is None  # no table
    ant = published_reference("AntDir", "maml", 200, make_protocol("paper", "AntDir"))
    assert ant is not None and ant.episodes_per_step == 40
    assert published_reference("AntDir", "maml", 200, paper) is None  # 20 rollouts, not 40


# -- evaluating a run --------------------------------------------------------------------------


def test_eval_rows_follow_the_protocol(runs: Callable[..., Path], tmp_path: Path) -> None:
    loaded = load_run(runs("maml-trpo"))
    protocol = make_protocol("quick", "Point2DNav", **TINY)
    result = evaluate_run(loaded, protocol, baseline_tasks=0)
    assert result.returns.shape == (2, 3, 3)  # seeds x steps x tasks
    assert result.tasks == list(
        make_family("Point2DNav", horizon=HORIZON).task_split("default").test[:3]
    )
    # Each seed's curve is the agent's own adaptation_curve on the same tasks.
    sampler = make_sampler(FamilyTaskSampler(loaded.family), loaded.agent.policy)
    direct = loaded.agent.adaptation_curve(sampler, result.tasks, 2, 2, seed=1)
    np.testing.assert_array_equal(result.returns[1], direct)
    rows = result.rows()
    assert [r["curve"] for r in rows] == ["agent"] * 3
    for s, row in enumerate(rows):
        values = result.returns[:, s, :]
        assert row["mean"] == pytest.approx(values.mean())
        assert row["n"] == 6
        assert row["ci_low"] < row["mean"] < row["ci_high"]
        assert row["env_steps"] == s * 2 * HORIZON  # 2 episodes per step
        assert row["label"] == f"step {s}"
    # Same seeds, same numbers.
    again = evaluate_run(loaded, protocol, baseline_tasks=0)
    np.testing.assert_array_equal(again.returns, result.returns)

    paths = write_eval(result, tmp_path / "eval")
    with paths["csv"].open() as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == CSV_COLUMNS
    assert [float(r["mean"]) for r in table] == pytest.approx([r["mean"] for r in rows])
    data = json.loads(paths["json"].read_text())
    assert np.asarray(data["returns"]).shape == (2, 3, 3)
    back = EvalResult.from_json(data)
    np.testing.assert_array_equal(back.returns, result.returns)
    assert back.rows() == rows
    stem = "quick_num-tasks=3_episodes-per-step=2"
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [f"{stem}.csv", f"{stem}.json"]


def test_rl2_eval_reads_episodes_of_a_trial(runs: Callable[..., Path]) -> None:
    loaded = load_run(runs("rl2-ppo"))
    result = evaluate_run(loaded, make_protocol("quick", "Point2DNav", **TINY), baseline_tasks=0)
    rows = result.rows()
    assert [r["label"] for r in rows] == ["episode 1", "episode 2", "episode 3"]
    assert result.steps_per_step == HORIZON  # one episode per adaptation step
    assert [r["env_steps"] for r in rows] == [0, HORIZON, 2 * HORIZON]


def test_sb3_baseline_learns_from_scratch_deterministically() -> None:
    family = make_family("Point2DNav", horizon=HORIZON)
    tasks = list(family.task_split("default").test[:2])
    first = sb3_baseline(family, tasks, num_steps=2, steps_per_step=20, eval_episodes=2, seed=3)
    second = sb3_baseline(family, tasks, num_steps=2, steps_per_step=20, eval_episodes=2, seed=3)
    assert first.shape == (2, 3)
    assert np.all(np.isfinite(first)) and np.all(first <= 0)  # Point2DNav: minus a distance
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first[:, 0], first[:, 2])  # two PPO updates changed the policy
    with pytest.raises(ValueError, match="at least 2 env steps"):
        sb3_baseline(family, tasks, 1, 1, 1, 0)


def test_eval_with_baseline_and_figure(runs: Callable[..., Path], tmp_path: Path) -> None:
    results = []
    for algo in ("maml-trpo", "reptile-ppo"):
        loaded = load_run(runs(algo))
        protocol = make_protocol("quick", "Point2DNav", **{**TINY, "seeds": [0]})
        result = evaluate_run(loaded, protocol, baseline_tasks=2, baseline_eval_episodes=2)
        assert result.baseline is not None and result.baseline.shape == (2, 3)
        base_rows = [r for r in result.rows() if r["curve"] == "sb3-ppo-scratch"]
        assert [r["env_steps"] for r in base_rows] == [0, 2 * HORIZON, 4 * HORIZON]
        assert [r["n"] for r in base_rows] == [2, 2, 2]
        results.append(result)
    png = plot_adaptation(results, tmp_path / "both.png")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 400
    with pytest.raises(ValueError, match=r"\.png"):
        plot_adaptation(results, tmp_path / "both.jpg")


# -- loading run folders -----------------------------------------------------------------------


def test_load_run_rejects_bad_folders(runs: Callable[..., Path], tmp_path: Path) -> None:
    with pytest.raises(RunError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    run = tmp_path / "copy"
    shutil.copytree(runs("maml-trpo"), run)
    assert load_run(run, checkpoint=2).iteration == 2
    with pytest.raises(RunError, match="checkpoint 7 not found"):
        load_run(run, checkpoint=7)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(RunError, match="newer metarl"):
        load_run(run)
    (run / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "family"}))
    with pytest.raises(RunError, match=r"incomplete.*family"):
        load_run(run)
    (run / "config.json").write_text(json.dumps(config))
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(RunError, match="no checkpoint"):
        load_run(run)


# -- the command -------------------------------------------------------------------------------


def test_eval_command_writes_files(
    runs: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(runs("maml-trpo"), run_a)
    shutil.copytree(runs("rl2-ppo"), run_b)
    figure = tmp_path / "fig.png"
    argv = [
        "eval",
        str(run_a),
        str(run_b),
        "--num-tasks",
        "2",
        "--num-adapt-steps",
        "1",
        "--episodes-per-step",
        "2",
        "--seeds",
        "0",
        "--no-baseline",
        "--no-progress",
        "--figure",
        str(figure),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "step 0" in out and "episode 2" in out
    stem = "quick_num-tasks=2_num-adapt-steps=1_episodes-per-step=2_seeds=0_no-baseline"
    for run in (run_a, run_b):
        assert sorted(p.name for p in eval_dir(run).iterdir()) == [
            f"{stem}.csv",
            f"{stem}.json",
            f"{stem}.png",
        ]
    assert figure.stat().st_size > 0


def test_eval_names_say_every_setting_that_differs_from_the_defaults() -> None:
    quick = make_protocol("quick", "Point2DNav")
    assert eval_name(quick) == "quick"  # the default eval keeps its file names
    assert eval_name(make_protocol("paper", "AntDir")) == "paper"
    assert eval_name(quick, iteration=50) == "quick_iteration=50"
    assert eval_name(quick, backend="processes") == "quick"  # the host backends agree
    assert eval_name(quick, backend="warp") == "quick_backend=warp"
    assert eval_name(quick, baseline_tasks=0, baseline_episodes=9) == "quick_no-baseline"
    assert eval_name(quick, baseline_tasks=2, baseline_episodes=9) == (
        "quick_baseline-tasks=2_baseline-episodes=9"
    )
    sizes = make_protocol("paper", "HalfCheetahVel", step_sizes=[0.2, 0.1, 0.1], seeds=[3, 4])
    assert eval_name(sizes) == "paper_step-sizes=0.2,0.1,0.1_seeds=3,4"
    assert settings_name("x", {"camera": "a/b c"}) == "x_camera=a-b-c"  # one path part


def test_eval_prints_a_header_and_the_baselines_interval(
    runs: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs("maml-trpo"), run)
    argv = ["eval", str(run), "--num-tasks", "2", "--num-adapt-steps", "1"]
    argv += ["--episodes-per-step", "2", "--seeds", "0", "1", "3"]
    argv += ["--baseline-tasks", "2", "--baseline-episodes", "1"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    title = next(i for i, line in enumerate(lines) if "protocol" in line)
    header = lines[title + 1].split()
    assert header == ["step", "env", "steps", "agent", "95%", "CI", "sb3-ppo-scratch", "95%", "CI"]
    stem = "quick_num-tasks=2_num-adapt-steps=1_episodes-per-step=2_seeds=0,1,3"
    stem += "_baseline-tasks=2_baseline-episodes=1"
    with (eval_dir(run) / f"{stem}.csv").open() as f:
        table = list(csv.DictReader(f))
    for s in range(2):
        row = lines[title + 2 + s]
        assert row.startswith(f"  step {s}")
        # Agent and baseline each print their mean and 95% interval, as in the CSV.
        for curve in ("agent", "sb3-ppo-scratch"):
            (r,) = [r for r in table if r["curve"] == curve and r["step"] == str(s)]
            assert float(r["ci_low"]) < float(r["ci_high"])
            cell = f"{float(r['mean']):.2f}  [{float(r['ci_low']):.2f}, {float(r['ci_high']):.2f}]"
            assert cell in row, (cell, row)
    assert "n = 6 (2 tasks x 3 seeds), sb3-ppo-scratch n = 2 tasks" in lines[title + 4]
    # The bars count the agent's episodes (2 tasks x 2 steps x 2 episodes x 3 seeds), then the
    # baseline's tasks.
    assert "24/24" in captured.err and "episode/s" in captured.err
    assert "2/2" in captured.err and "task" in captured.err
    assert "part" not in captured.err


def test_evals_with_other_settings_keep_each_others_files(
    runs: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs("maml-trpo"), run)
    base = ["eval", str(run), "--num-tasks", "2", "--num-adapt-steps", "1", "--no-baseline"]
    base += ["--episodes-per-step", "2", "--no-progress"]
    stem = "quick_num-tasks=2_num-adapt-steps=1_episodes-per-step=2"
    assert main([*base, "--seeds", "0"]) == 0
    first = (eval_dir(run) / f"{stem}_seeds=0_no-baseline.json").read_text()
    assert main([*base, "--seeds", "5"]) == 0
    assert main([*base, "--seeds", "0", "--checkpoint", "2"]) == 0
    assert sorted(p.stem for p in eval_dir(run).glob("*.json")) == [
        f"{stem}_seeds=0_iteration=2_no-baseline",
        f"{stem}_seeds=0_no-baseline",
        f"{stem}_seeds=5_no-baseline",
    ]
    assert (eval_dir(run) / f"{stem}_seeds=0_no-baseline.json").read_text() == first
    capsys.readouterr()
    # The same settings on a later checkpoint replace the file, and say so.
    resume = ["train", "maml-trpo", "--resume", str(run), "--iterations", "3", "--no-progress"]
    assert main(resume) == 0
    assert main([*base, "--seeds", "0"]) == 0
    out = capsys.readouterr().out
    assert "iteration 3" in out and "replacing the evaluation of iteration 2" in out
    data = json.loads((eval_dir(run) / f"{stem}_seeds=0_no-baseline.json").read_text())
    assert data["iteration"] == 3


def test_eval_command_fails_early_and_clearly(
    runs: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    run = tmp_path / "run"
    shutil.copytree(runs("maml-trpo"), run)
    (run / "eval").write_text("a file where the eval folder goes")
    assert main(["eval", str(run), "--no-progress"]) == 2
    assert "cannot write to" in capsys.readouterr().err
    (run / "eval").unlink()
    blocked = tmp_path / "file.txt"
    blocked.write_text("")
    assert main(["eval", str(run), "--figure", str(blocked / "f.png"), "--no-progress"]) == 2
    assert "cannot write to" in capsys.readouterr().err
    assert main(["eval", str(run), "--num-tasks", "2", "--baseline-tasks", "3"]) == 2
    assert "exceeds" in capsys.readouterr().err
    assert main(["eval", str(run), "--protocol", "nope"]) == 2
    assert "quick" in capsys.readouterr().err
    assert not (run / "eval").exists() or not any((run / "eval").iterdir())


def test_write_atomically_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, half_then_fail)
    assert list(tmp_path.iterdir()) == []
    write_atomically(target, lambda tmp: tmp.write_bytes(b"whole"))
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
    assert target.read_bytes() == b"whole"
