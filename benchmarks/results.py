"""The results suite: one command per learning result, and a report built only from its files.

::

    python benchmarks/results.py list                       # the cells and their budgets
    python benchmarks/results.py run point2d-maml-trpo-paper --seeds 0 1 2
    python benchmarks/results.py run point2d-rl2-ppo --seeds 0 1 2 --jobs 2
    python benchmarks/results.py sync                       # publish seeds still training
    python benchmarks/results.py report                     # docs/results.md and its figures

A *cell* names an agent, a family and variant, a preset and its overrides, an env-step budget
and a meta-test protocol. ``run`` trains each seed in ``runs/results/<cell>/seed-<n>/`` (the
checkpoints stay there, out of git), resumes a seed that was stopped where it stopped,
meta-tests the final checkpoint on the family's held-out test tasks and writes the small result
files that are committed to the repository::

    results/<cell>/seed-<n>/config.json    the run's resolved config
    results/<cell>/seed-<n>/metrics.csv    one row per iteration
    results/<cell>/seed-<n>/eval.json      every per-seed, per-task meta-test return
    results/<cell>/seed-<n>/eval.csv       the meta-test's summary rows
    results/<cell>/seed-<n>/run.json       status, budget, wall time, machine, the commands

A seed that has not finished training carries ``status: unfinished`` and its metrics so far;
``report`` shows it as unfinished (and a planned seed with no folder as missing), never drops
it; ``sync`` publishes the seeds still training that way, before a session that must stop.
``report`` reads nothing but ``results/`` and writes ``docs/results.md`` and
``docs/figures/results-*.png``; the findings written by hand in ``results/findings.md`` are
included as they are.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
RUNS = ROOT / "runs" / "results"
DOCS = ROOT / "docs"
FORMAT = 1
"""Version of ``run.json``."""


@dataclass(frozen=True)
class Cell:
    """One learning result: what is trained, for how long, and how it is meta-tested.

    Attributes:
        name: the folder name under ``results/``.
        algo, family, variant, preset: what ``metarl train`` is given.
        budget: env steps of training per seed; the iterations are the fewest that reach it
            (see :func:`steps_per_iteration`). None: the preset's own iterations.
        flags: further ``metarl train`` flags (overrides of the preset).
        protocol: the meta-test preset (``paper``, ``quick``) and ``eval`` overrides (fields
            of :class:`metarl.evaluation.Protocol`).
        seeds: the seeds the cell is planned with (the report lists any that are missing).
        group: cells of one group are compared at equal budget in one table and figure.
        note: one line for the report (which paper setting, why this variant).
    """

    name: str
    algo: str
    family: str
    variant: str | None
    preset: str
    budget: int | None = None
    flags: tuple[str, ...] = ()
    protocol: str = "paper"
    eval_overrides: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0, 1, 2)
    group: str = ""
    note: str = ""
    checkpoint_every: int = 5


POINT_BUDGET = 8_000_000
"""Point2DNav's env steps per seed: the MAML paper's run (100 iterations x 20 tasks x 20
episodes x H = 100, before and after adaptation)."""
CHEETAH_DIR_BUDGET = 32_000_000
"""HalfCheetahDir's: the paper's 100 iterations x 40 tasks x 20 episodes x H = 200, x 2."""
CHEETAH_VEL_BUDGET = 76_000_000
"""HalfCheetahVel's: the paper's 475 iterations x 40 tasks x 10 episodes x H = 200, x 2."""
PARAMS_BUDGET = 6_000_000
"""HalfCheetahParams' (no published number): the same for every agent, about ten minutes of a
core per seed."""
ML1_BUDGET = 3_600_000
"""Meta-World ML1's: about an hour of one core (MAML-TRPO's seed 0 took 66 min, about 900 env
steps/s with its optimization); the published ML1 runs sample tens of millions of steps. Run
these cells from the Meta-World environment:
``.venv-mujoco33/bin/python benchmarks/results.py run ...``."""
ML1_PROTOCOL = {"num_tasks": 20, "num_steps": 2, "episodes_per_step": 10, "seeds": (0,)}
"""Meta-World's meta-test at a budget that fits beside training (300k env steps): 20 of the 50
held-out goals, 10 episodes (RL^2: trials) per step, one sampling seed."""
ANT_DIR_BUDGET = 20_000_000
"""AntDir's: what one core samples in a few hours (the paper's run is 368M env steps)."""

CELLS: dict[str, Cell] = {
    c.name: c
    for c in [
        Cell(
            "point2d-maml-trpo-paper",
            "maml-trpo",
            "Point2DNav",
            "maml-rllab",
            "paper",
            group="Point2DNav (maml-rllab, H = 100), 8M env steps",
            note="Finn et al. 2017's 2-D navigation: meta-batch 20, 20 episodes, (100, 100) "
            "ReLU, 100 iterations; actions in [-1, 1] scaled into the 0.1 step as the "
            "paper's rllab code does",
        ),
        Cell(
            "point2d-reptile-ppo",
            "reptile-ppo",
            "Point2DNav",
            "maml-rllab",
            "default",
            budget=POINT_BUDGET,
            group="Point2DNav (maml-rllab, H = 100), 8M env steps",
            note="the default preset, iterations set by the budget",
        ),
        Cell(
            "point2d-reptile-ppo-linear",
            "reptile-ppo",
            "Point2DNav",
            "maml-rllab",
            "default",
            budget=POINT_BUDGET,
            flags=("--baseline", "linear"),
            group="Point2DNav ablation: Reptile-PPO's baseline, 8M env steps",
            note="point2d-reptile-ppo with MAML-TRPO's per-task linear feature baseline in place "
            "of the value network (see the findings)",
        ),
        Cell(
            "point2d-rl2-ppo-ent0",
            "rl2-ppo",
            "Point2DNav",
            "maml-rllab",
            "default",
            budget=POINT_BUDGET,
            flags=("--ent-coef", "0"),
            group="Point2DNav ablation: RL^2-PPO's exploration noise, 8M env steps",
            note="point2d-rl2-ppo without the entropy bonus, whose std ran away on clipped "
            "actions in two of three seeds (see the findings)",
        ),
        Cell(
            "point2d-rl2-ppo-ent0-std",
            "rl2-ppo",
            "Point2DNav",
            "maml-rllab",
            "default",
            budget=POINT_BUDGET,
            flags=("--ent-coef", "0", "--min-std", "0.1"),
            group="Point2DNav ablation: RL^2-PPO's exploration noise, 8M env steps",
            note="point2d-rl2-ppo-ent0 with the std kept at 0.1 or more, where without the "
            "floor it collapsed to 0.04 and training broke down (see the findings)",
        ),
        Cell(
            "point2d-rl2-ppo",
            "rl2-ppo",
            "Point2DNav",
            "maml-rllab",
            "default",
            budget=POINT_BUDGET,
            group="Point2DNav (maml-rllab, H = 100), 8M env steps",
            note="garage's RL^2-PPO settings (4 episodes per trial), iterations set by the "
            "budget; the meta-test's steps are episodes 1-4 of a trial",
        ),
        Cell(
            "cheetah-dir-maml-trpo-paper",
            "maml-trpo",
            "HalfCheetahDir",
            "maml-100hz",
            "paper",
            group="HalfCheetahDir (maml-100hz, H = 200), 32M env steps",
            note="Finn et al. 2017: 100 iterations, meta-batch 40, 20 episodes, max KL 0.02; "
            "the 100 Hz rate of the paper's rllab cheetah",
        ),
        Cell(
            "cheetah-vel-maml-trpo-paper",
            "maml-trpo",
            "HalfCheetahVel",
            "maml-100hz",
            "paper",
            group="HalfCheetahVel (maml-100hz, H = 200), 76M env steps",
            note="Finn et al. 2017: 475 iterations, meta-batch 40, 10 episodes, max KL 0.01",
        ),
        Cell(
            "cheetah-dir-reptile-ppo",
            "reptile-ppo",
            "HalfCheetahDir",
            "maml-100hz",
            "default",
            budget=CHEETAH_DIR_BUDGET,
            group="HalfCheetahDir (maml-100hz, H = 200), 32M env steps",
            note="the default preset at MAML-TRPO's paper budget (200 iterations of 20 tasks "
            "x 10 episodes x 4 rounds)",
        ),
        Cell(
            "cheetah-dir-rl2-ppo",
            "rl2-ppo",
            "HalfCheetahDir",
            "maml-100hz",
            "default",
            budget=CHEETAH_DIR_BUDGET,
            group="HalfCheetahDir (maml-100hz, H = 200), 32M env steps",
            note="garage's RL^2-PPO settings at MAML-TRPO's paper budget, iterations set by "
            "the budget",
        ),
        Cell(
            "cheetah-vel-reptile-ppo",
            "reptile-ppo",
            "HalfCheetahVel",
            "maml-100hz",
            "default",
            budget=CHEETAH_VEL_BUDGET,
            group="HalfCheetahVel (maml-100hz, H = 200), 76M env steps",
            note="the default preset at MAML-TRPO's paper budget, iterations set by the budget",
        ),
        Cell(
            "cheetah-vel-rl2-ppo",
            "rl2-ppo",
            "HalfCheetahVel",
            "maml-100hz",
            "default",
            budget=CHEETAH_VEL_BUDGET,
            group="HalfCheetahVel (maml-100hz, H = 200), 76M env steps",
            note="garage's RL^2-PPO settings at MAML-TRPO's paper budget, iterations set by "
            "the budget",
        ),
        Cell(
            "cheetah-params-maml-trpo",
            "maml-trpo",
            "HalfCheetahParams",
            "pearl",
            "default",
            budget=PARAMS_BUDGET,
            flags=("--meta-batch-size", "20", "--episodes-per-task", "10"),
            group="HalfCheetahParams (pearl, H = 200), 6M env steps",
            note="dynamics tasks (mass, inertia, friction, damping); meta-batch 20 x 10 "
            "episodes so that the budget makes 75 iterations",
        ),
        Cell(
            "cheetah-params-reptile-ppo",
            "reptile-ppo",
            "HalfCheetahParams",
            "pearl",
            "default",
            budget=PARAMS_BUDGET,
            group="HalfCheetahParams (pearl, H = 200), 6M env steps",
            note="the default preset, iterations set by the budget",
        ),
        Cell(
            "cheetah-params-rl2-ppo",
            "rl2-ppo",
            "HalfCheetahParams",
            "pearl",
            "default",
            budget=PARAMS_BUDGET,
            group="HalfCheetahParams (pearl, H = 200), 6M env steps",
            note="garage's settings, iterations set by the budget",
        ),
        Cell(
            "ml1-reach-maml-trpo",
            "maml-trpo",
            "ML1-reach-v3",
            None,
            "default",
            budget=ML1_BUDGET,
            flags=("--meta-batch-size", "10", "--episodes-per-task", "10"),
            eval_overrides=dict(ML1_PROTOCOL),
            group="ML1-reach-v3 (Meta-World, H = 500), 3.6M env steps",
            note="meta-batch 10 x 10 episodes (36 iterations in the budget); meta-tested on "
            "20 held-out goals, success rate beside the return",
        ),
        Cell(
            "ml1-reach-rl2-ppo",
            "rl2-ppo",
            "ML1-reach-v3",
            None,
            "default",
            budget=ML1_BUDGET,
            eval_overrides=dict(ML1_PROTOCOL),
            group="ML1-reach-v3 (Meta-World, H = 500), 3.6M env steps",
            note="garage's RL^2-PPO settings (GRU, 4 episodes per trial), iterations set by "
            "the budget; the meta-test's steps are episodes 1-3 of a trial",
        ),
        Cell(
            "ml1-push-maml-trpo",
            "maml-trpo",
            "ML1-push-v3",
            None,
            "default",
            budget=ML1_BUDGET,
            flags=("--meta-batch-size", "10", "--episodes-per-task", "10"),
            eval_overrides=dict(ML1_PROTOCOL),
            group="ML1-push-v3 (Meta-World, H = 500), 3.6M env steps",
            note="as ml1-reach-maml-trpo: meta-batch 10 x 10 episodes (36 iterations); "
            "meta-tested on 20 held-out tasks, success rate beside the return",
        ),
        Cell(
            "ml1-push-rl2-ppo",
            "rl2-ppo",
            "ML1-push-v3",
            None,
            "default",
            budget=ML1_BUDGET,
            eval_overrides=dict(ML1_PROTOCOL),
            group="ML1-push-v3 (Meta-World, H = 500), 3.6M env steps",
            note="as ml1-reach-rl2-ppo: garage's RL^2-PPO settings, iterations set by the "
            "budget; the meta-test's steps are episodes 1-3 of a trial",
        ),
        Cell(
            "ant-dir-maml-trpo",
            "maml-trpo",
            "AntDir",
            "maml",
            "paper",
            budget=ANT_DIR_BUDGET,
            flags=("--meta-batch-size", "20", "--episodes-per-task", "20"),
            group="AntDir (maml, forward/backward, H = 200), 20M env steps",
            note="the paper's settings at meta-batch 20 x 20 episodes and 20M env steps "
            "(125 iterations; the paper's run, 575 iterations x 40 x 40, is 368M)",
        ),
    ]
}
"""Every cell of the suite, by name."""


# --------------------------------------------------------------------------------------------
# Budgets
# --------------------------------------------------------------------------------------------


def _resolved(cell: Cell) -> tuple[Any, Any]:
    """``(RunArgs, agent config)`` of the cell, as ``metarl train`` resolves them."""
    from metarl.cli import parse_train_args

    argv = ["--env", cell.family, "--preset", cell.preset, *cell.flags]
    if cell.variant is not None:
        argv += ["--variant", cell.variant]
    run, config, _ = parse_train_args(cell.algo, argv, prog="results", description="")
    return run, config


def _horizon(run: Any) -> int:
    """The run's episode length, from its family's variant (no env is built: a Meta-World
    cell's budget is known where Meta-World is not installed)."""
    from metarl.registry import family_class

    if run.horizon is not None:
        return int(run.horizon)
    cls = family_class(run.env)
    return int(cls.variants[run.variant or cls.default_variant].horizon)


def steps_per_iteration(algo: str, config: Any, horizon: int) -> int:
    """Env steps one meta-iteration samples at most (episodes that end early take fewer).

    MAML-TRPO and Reptile-PPO sample every task before each adaptation step and once after
    the last; RL^2 samples whole trials.
    """
    if algo in ("maml-trpo", "reptile-ppo"):
        rounds = int(config.num_adapt_steps) + 1
        return rounds * int(config.meta_batch_size) * int(config.episodes_per_task) * horizon
    if algo == "rl2-ppo":
        trials = int(config.meta_batch_size) * int(config.trials_per_task)
        return trials * int(config.episodes_per_trial) * horizon
    raise ValueError(f"no env-step count for {algo!r}")


def iterations(cell: Cell) -> int:
    """The cell's meta-iterations: the preset's, or the fewest that reach its budget."""
    run, config = _resolved(cell)
    if cell.budget is None:
        return int(config.iterations)
    per = steps_per_iteration(cell.algo, config, _horizon(run))
    return max(1, math.ceil(cell.budget / per))


def env_steps(cell: Cell) -> tuple[int, int]:
    """``(total, per iteration)``: the env steps a seed of the cell samples at most."""
    run, config = _resolved(cell)
    per = steps_per_iteration(cell.algo, config, _horizon(run))
    return iterations(cell) * per, per


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the seed ran on: processor, cores, Python, torch and MuJoCo versions."""
    import mujoco
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "mujoco": mujoco.__version__,
        "torch_threads": 1,
    }


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def _read_metrics(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def portable(text: str) -> str:
    """``text`` with this checkout's absolute path made relative to it: committed files name
    ``runs/results/...``, never a folder of the machine that wrote them."""
    return text.replace(str(ROOT) + os.sep, "")


def _atomic_write(path: Path, text: str) -> None:
    from metarl.runs import write_atomically

    write_atomically(path, lambda tmp: tmp.write_text(portable(text)))


def _train_argv(cell: Cell, seed: int, run_dir: Path, total: int, progress: bool) -> list[str]:
    common = ["--iterations", str(total), "--progress" if progress else "--no-progress"]
    if (run_dir / "checkpoints" / "latest.pt").is_file():
        return ["train", cell.algo, "--env", cell.family, "--resume", str(run_dir), *common]
    argv = ["train", cell.algo, "--env", cell.family, "--preset", cell.preset]
    if cell.variant is not None:
        argv += ["--variant", cell.variant]
    argv += ["--seed", str(seed), "--run-dir", str(run_dir), *cell.flags, *common]
    argv += ["--checkpoint-every", str(cell.checkpoint_every), "--keep-every", "1000000"]
    argv += ["--torch-threads", "1"]
    return argv


def _publish(
    cell: Cell,
    seed: int,
    run_dir: Path,
    out: Path,
    total: int,
    record: dict[str, Any],
) -> dict[str, Any]:
    """Copy the run's small files to ``out`` and write ``run.json``; returns it."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "metrics.csv"):
        if (run_dir / name).is_file():
            _atomic_write(out / name, (run_dir / name).read_text())
    rows = _read_metrics(out / "metrics.csv")
    record.update(
        {
            "format": FORMAT,
            "cell": cell.name,
            "seed": seed,
            "algo": cell.algo,
            "family": cell.family,
            "variant": cell.variant,
            "preset": cell.preset,
            "flags": list(cell.flags),
            "budget": cell.budget,
            "planned_seeds": list(cell.seeds),
            "group": cell.group,
            "note": cell.note,
            "protocol": cell.protocol,
            "iterations": total,
            "iterations_done": len(rows),
            "env_steps": int(sum(float(r.get("env_steps") or 0.0) for r in rows)),
            "train_seconds": float(sum(float(r.get("time/iteration") or 0.0) for r in rows)),
        }
    )
    _atomic_write(out / "run.json", json.dumps(record, indent=2) + "\n")
    return record


def run_seed(
    cell: Cell,
    seed: int,
    results: Path = RESULTS,
    runs: Path = RUNS,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) one seed of ``cell``, meta-test it and write its result files.

    Returns:
        The seed's ``run.json`` record.

    Raises:
        RuntimeError: training or the meta-test failed (the files written so far stay, with
            ``status: unfinished``; the same command resumes).
    """
    from metarl.cli import main as metarl

    total = iterations(cell)
    run_dir = runs / cell.name / f"seed-{seed}"
    out = results / cell.name / f"seed-{seed}"
    previous: dict[str, Any] = {}
    if (out / "run.json").is_file():
        previous = json.loads((out / "run.json").read_text())
    record: dict[str, Any] = {
        "status": "unfinished",
        "machine": machine(),
        "metarl_commit": _commit(),
        "sessions": [*previous.get("sessions", [])],
        "eval_seconds": previous.get("eval_seconds"),
    }
    done = _checkpoint_iteration(run_dir)
    if run_dir.exists() and done is None:
        # Stopped before its first checkpoint: nothing to resume from, start it again.
        print(f"[results] {run_dir} has no checkpoint yet; starting it again", file=sys.stderr)
        shutil.rmtree(run_dir)
    if done is None or done < total:
        argv = _train_argv(cell, seed, run_dir, total, progress)
        record["train_command"] = "metarl " + " ".join(argv)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        try:
            status = metarl(argv)
        except KeyboardInterrupt:
            status = 130
        record["sessions"].append(
            {
                "started": started,
                "seconds": round(time.perf_counter() - t0, 1),
                "machine": record["machine"]["cpu"],
            }
        )
        if status != 0:
            _publish(cell, seed, run_dir, out, total, record)
            raise RuntimeError(
                f"{cell.name} seed {seed}: training stopped (exit {status}); run the same "
                "command again to resume it"
            )
    else:
        record["train_command"] = previous.get("train_command")
    record = _publish(cell, seed, run_dir, out, total, record)
    if _checkpoint_iteration(run_dir) != total:
        raise RuntimeError(f"{cell.name} seed {seed}: no checkpoint at iteration {total}")
    eval_json = out / "eval.json"
    fresh = eval_json.is_file() and json.loads(eval_json.read_text()).get("iteration") == total
    if not fresh:
        t0 = time.perf_counter()
        _evaluate(cell, run_dir, out, progress)
        record["eval_seconds"] = round(time.perf_counter() - t0, 1)
    record["status"] = "complete"
    _atomic_write(out / "run.json", json.dumps(record, indent=2) + "\n")
    return record


def _checkpoint_iteration(run_dir: Path) -> int | None:
    """The iteration of the run's latest checkpoint (None: no checkpoint yet)."""
    from metarl.runs import load_checkpoint

    path = run_dir / "checkpoints" / "latest.pt"
    return int(load_checkpoint(path)["iteration"]) if path.is_file() else None


def _evaluate(cell: Cell, run_dir: Path, out: Path, progress: bool) -> None:
    """The cell's meta-test on the run's final checkpoint: ``eval.json`` and ``eval.csv``."""
    from metarl.evaluation import evaluate_run, load_run, make_protocol, write_eval

    run = load_run(run_dir)
    protocol = make_protocol(cell.protocol, run.family.name, **cell.eval_overrides)
    result = evaluate_run(run, protocol, baseline_tasks=0, progress=progress)
    paths = write_eval(result, run_dir / "eval")
    _atomic_write(out / "eval.json", paths["json"].read_text())
    _atomic_write(out / "eval.csv", paths["csv"].read_text())


def run_cell(
    cell: Cell,
    seeds: Sequence[int],
    jobs: int = 1,
    results: Path = RESULTS,
    runs: Path = RUNS,
    progress: bool = True,
) -> int:
    """Every seed of ``cell`` (``jobs`` at once, each in its own process); the exit status."""
    if jobs <= 1 or len(seeds) == 1:
        failed = 0
        for seed in seeds:
            try:
                record = run_seed(cell, seed, results, runs, progress)
            except RuntimeError as exc:
                print(f"[results] {exc}", file=sys.stderr)
                failed += 1
                continue
            print(_seed_line(record))
        return 1 if failed else 0
    pending = list(seeds)
    active: list[subprocess.Popen[bytes]] = []
    status = 0
    cmd = [sys.executable, __file__, "run", cell.name, "--no-progress"]
    cmd += ["--results", str(results), "--runs", str(runs), "--seeds"]
    while pending or active:
        while pending and len(active) < jobs:
            active.append(subprocess.Popen([*cmd, str(pending.pop(0))]))
        time.sleep(1.0)
        for proc in [p for p in active if p.poll() is not None]:
            active.remove(proc)
            status = status or int(proc.returncode != 0)
    return status


def sync(
    results: Path = RESULTS, runs: Path = RUNS, cells: Sequence[Cell] | None = None
) -> list[dict[str, Any]]:
    """Publish the seeds still training (or stopped) as ``unfinished``, with their metrics so
    far, so that what a stopped session trained is committed and shown; finished seeds are
    left as they are. Returns the records written."""
    written = []
    for cell in list(CELLS.values()) if cells is None else cells:
        for run_dir in sorted((runs / cell.name).glob("seed-*")):
            try:
                seed = int(run_dir.name.split("-", 1)[1])
            except ValueError:
                continue
            out = results / cell.name / f"seed-{seed}"
            previous = json.loads((out / "run.json").read_text()) if out.is_dir() else {}
            if previous.get("status") == "complete" or not (run_dir / "metrics.csv").is_file():
                continue
            record = {
                **previous,
                "status": "unfinished",
                "machine": machine(),
                "metarl_commit": _commit(),
                "resume_command": f"python benchmarks/results.py run {cell.name} --seeds {seed}",
            }
            record.setdefault("sessions", [])
            written.append(_publish(cell, seed, run_dir, out, iterations(cell), record))
    return written


def _seed_line(record: dict[str, Any]) -> str:
    return (
        f"{record['cell']} seed {record['seed']}: {record['status']}, "
        f"{record['iterations_done']}/{record['iterations']} iterations, "
        f"{_steps(record['env_steps'])} env steps, {record['train_seconds'] / 60:.1f} min"
    )


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


@dataclass
class SeedResult:
    """What ``results/<cell>/seed-<n>/`` holds, read back."""

    seed: int
    status: str
    record: dict[str, Any]
    metrics: list[dict[str, str]]
    eval: dict[str, Any] | None

    def step_values(self) -> list[float] | None:
        """Mean meta-test return after each adaptation step (over tasks and eval seeds)."""
        if self.eval is None:
            return None
        returns = np.asarray(self.eval["returns"], dtype=np.float64)  # [seeds, steps, tasks]
        return [float(returns[:, s, :].mean()) for s in range(returns.shape[1])]

    def success_values(self) -> list[float] | None:
        """Meta-test success rate after each adaptation step, where the env reports one."""
        if self.eval is None or self.eval.get("success") is None:
            return None
        success = np.asarray(self.eval["success"], dtype=np.float64)  # [seeds, steps, tasks]
        return [float(success[:, s, :].mean()) for s in range(success.shape[1])]

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative env steps and post-adaptation training return, per iteration."""
        steps = np.cumsum([float(r.get("env_steps") or 0.0) for r in self.metrics])
        post = np.array([float(r.get("meta/return_post_adapt") or "nan") for r in self.metrics])
        return steps, post


def load_cell(folder: Path) -> dict[int, SeedResult]:
    """Every seed folder of a cell's results, by seed."""
    seeds: dict[int, SeedResult] = {}
    for sub in sorted(folder.glob("seed-*")):
        try:
            seed = int(sub.name.split("-", 1)[1])
        except ValueError:
            continue
        record = json.loads((sub / "run.json").read_text()) if (sub / "run.json").is_file() else {}
        eval_path = sub / "eval.json"
        data = json.loads(eval_path.read_text()) if eval_path.is_file() else None
        status = str(record.get("status", "unfinished"))
        if data is None and status == "complete":
            status = "unfinished"
        seeds[seed] = SeedResult(seed, status, record, _read_metrics(sub / "metrics.csv"), data)
    return seeds


def _published(cell: Cell, seed: SeedResult) -> dict[str, Any] | None:
    """The published MAML-TRPO curve the meta-test matched, for MAML-TRPO's cells only (the
    other agents have no published numbers in these settings)."""
    if cell.algo != "maml-trpo" or seed.eval is None:
        return None
    ref = seed.eval.get("reference")
    return ref if isinstance(ref, dict) else None


def _t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    from metarl.evaluation import summarize

    s = summarize(values)
    return s.mean, s.ci_low, s.ci_high


def _fmt(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.1f}"


def _cell_for(name: str, seeds: dict[int, SeedResult]) -> Cell:
    """The registered cell, or one described by its files (a cell no longer in the list)."""
    if name in CELLS:
        return CELLS[name]
    any_record = next((s.record for s in seeds.values() if s.record), {})
    return Cell(
        name,
        str(any_record.get("algo", "?")),
        str(any_record.get("family", "?")),
        any_record.get("variant"),
        str(any_record.get("preset", "?")),
        seeds=tuple(any_record.get("planned_seeds", sorted(seeds))),
        group=str(any_record.get("group") or any_record.get("family", name)),
        note=str(any_record.get("note", "")),
    )


def _steps(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _cell_section(cell: Cell, seeds: dict[int, SeedResult]) -> list[str]:
    planned = sorted(set(cell.seeds) | set(seeds))
    finished = [seeds[s] for s in planned if s in seeds and seeds[s].status == "complete"]
    lines = [f"#### `{cell.name}`", ""]
    what = f"{cell.algo}, `{cell.family}`"
    if cell.variant:
        what += f" variant `{cell.variant}`"
    what += f", preset `{cell.preset}`"
    if cell.flags:
        what += " with `" + " ".join(cell.flags) + "`"
    lines.append(what + (f": {cell.note}." if cell.note else "."))
    status = []
    for s in planned:
        if s not in seeds:
            status.append(f"seed {s} missing")
        elif seeds[s].status != "complete":
            r = seeds[s].record
            status.append(
                f"seed {s} unfinished ({r.get('iterations_done', len(seeds[s].metrics))}"
                f"/{r.get('iterations', '?')} iterations)"
            )
    if status:
        lines += ["", "Not in the mean: " + ", ".join(status) + "."]
    lines.append("")
    if not finished:
        lines += ["No finished seed yet.", ""]
        return lines
    first = finished[0]
    assert first.eval is not None
    protocol = first.eval["protocol"]
    recurrent = bool(first.eval.get("recurrent"))
    ref = _published(cell, first)
    values = [f.step_values() or [] for f in finished]
    num_steps = min(len(v) for v in values)
    head = ["episode" if recurrent else "step", "mean [95% CI over seeds]"]
    head.append("gain over " + ("episode 1" if recurrent else "step 0") + " [95% CI]")
    head += [f"seed {f.seed}" for f in finished]
    if ref is not None:
        head.append("published (Finn et al. 2017)")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in range(num_steps):
        col = [v[s] for v in values]
        mean, lo, hi = _t_interval(col)
        interval = f"{mean:.1f} [{lo:.1f}, {hi:.1f}]" if len(col) > 1 else f"{mean:.1f}"
        # Paired over seeds: each seed's own gain, so that seed-to-seed offsets cancel.
        gain = ""
        if s > 0:
            g, g_lo, g_hi = _t_interval([v[s] - v[0] for v in values])
            gain = f"{g:+.1f} [{g_lo:+.1f}, {g_hi:+.1f}]" if len(col) > 1 else f"{g:+.1f}"
        row = [str(s + 1) if recurrent else str(s), interval, gain, *(f"{v:.1f}" for v in col)]
        if ref is not None:
            published = ref["returns"]
            row.append(f"{published[s]:.1f}" if s < len(published) else "")
        lines.append("| " + " | ".join(row) + " |")
    steps = np.mean([f.record.get("env_steps", 0) for f in finished])
    wall = np.mean([f.record.get("train_seconds", 0.0) for f in finished])
    machines = sorted({str(f.record.get("machine", {}).get("cpu", "?")) for f in finished})
    iters = sorted({int(f.record.get("iterations", 0)) for f in finished})
    sizes = protocol.get("step_sizes")
    lines += [
        "",
        f"Training: {', '.join(map(str, iters))} iterations, {_steps(float(steps))} env steps and "
        f"{_hours(float(wall))} per seed (mean), one torch thread on {'; '.join(machines)}. "
        f"Meta-test: protocol {_protocol_label(str(protocol['name']))}, "
        f"{protocol['num_tasks']} held-out tasks, "
        f"{protocol['episodes_per_step']} episodes per "
        + ("trial" if recurrent else "step")
        + ("" if cell.algo != "maml-trpo" or sizes is None else f", step sizes {sizes}")
        + f", eval seeds {protocol['seeds']}"
        + (f"; published: {ref['source']}" if ref is not None else "")
        + ".",
        "",
    ]
    rates = {f.seed: f.success_values() for f in finished}
    if any(r is not None for r in rates.values()):
        per_seed = "; ".join(
            f"seed {seed}: " + " / ".join(f"{x:.2f}" for x in r)
            for seed, r in sorted(rates.items())
            if r is not None
        )
        lines += [f"Success rate after 0, 1, 2, ... steps ({per_seed}).", ""]
    return lines


def _smoothed(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A running mean of ``y`` over 2% of the iterations (at least 1), at its window's end."""
    window = max(1, len(y) // 50)
    if window == 1:
        return x, y
    kernel = np.ones(window) / window
    return x[window - 1 :], np.convolve(y, kernel, mode="valid")


def _plot_group(title: str, cells: list[tuple[Cell, dict[int, SeedResult]]], stem: Path) -> None:
    """``<stem>-learning.png`` and ``<stem>-adaptation.png`` for one group of cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metarl.runs import write_atomically

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (cell, seeds) in enumerate(cells):
        color = f"C{i}"
        curves = [_smoothed(*s.curve()) for s in seeds.values() if s.metrics]
        if not curves:
            continue
        for x, y in curves:
            ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
        start = max(float(x[0]) for x, _ in curves)
        end = min(float(x[-1]) for x, _ in curves)
        grid = np.linspace(start, max(start, end), 200)
        ys = np.stack([np.interp(grid, x, y) for x, y in curves])
        label = f"{cell.algo} ({cell.name}, {len(curves)} seeds)"
        ax.plot(grid, ys.mean(0), color=color, linewidth=2, label=label)
        if len(curves) > 1:
            ax.fill_between(grid, ys.min(0), ys.max(0), color=color, alpha=0.12)
    ax.set_xlabel("env steps")
    ax.set_ylabel("post-adaptation return, training batches\n(running mean, 2% of the run)")
    ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    write_atomically(Path(f"{stem}-learning.png"), lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.2))
    published_drawn = False
    for i, (cell, seeds) in enumerate(cells):
        finished = [s for s in seeds.values() if s.status == "complete" and s.eval is not None]
        if not finished:
            continue
        values = [s.step_values() or [] for s in finished]
        k = min(len(v) for v in values)
        arr = np.array([v[:k] for v in values])
        steps = np.arange(k)  # RL^2's episode s + 1 of a trial: after s episodes of the task
        mean = arr.mean(0)
        if len(arr) > 1:
            intervals = np.array([_t_interval(arr[:, s])[1:] for s in range(k)])
            err = np.abs(intervals.T - mean)
        else:
            err = None
        ax.errorbar(steps, mean, yerr=err, color=f"C{i}", marker="o", capsize=3, label=cell.name)
        ref = _published(cell, finished[0])
        if ref is not None and not published_drawn:
            pub = ref["returns"][:k]
            ax.plot(range(len(pub)), pub, "kx", markersize=9, label="published (MAML-TRPO)")
            published_drawn = True
    ax.set_xlabel("adaptation step s (RL^2: episode s + 1 of a trial)")
    ax.set_ylabel("meta-test return, held-out tasks")
    ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    write_atomically(Path(f"{stem}-adaptation.png"), lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def summary_table(cells: list[tuple[Cell, dict[int, SeedResult]]]) -> list[str]:
    """One row per cell with finished seeds: the mean over seeds after each step.

    Ablations (cells whose group names itself one) are left to docs/results.md: the README's
    table is the short summary of the main cells."""
    lines = [
        "| cell | agent | family (variant) | env steps / seed | seeds | mean return after 0, 1, "
        "2, 3 steps (RL^2: episodes 1-4) | published MAML-TRPO |",
        "|---|---|---|---|---|---|---|",
    ]
    for cell, seeds in cells:
        finished = [s for s in seeds.values() if s.status == "complete" and s.eval is not None]
        if not finished or "ablation" in cell.group.lower():
            continue
        values = [f.step_values() or [] for f in finished]
        k = min(len(v) for v in values)
        means = " / ".join(f"{np.mean([v[s] for v in values]):.1f}" for s in range(k))
        rates = [f.success_values() for f in finished]
        if all(r is not None for r in rates):  # Meta-World: its headline metric too
            r = [x for x in rates if x is not None]
            n = min(len(x) for x in r)
            means += (
                " (success "
                + " / ".join(f"{np.mean([x[s] for x in r]):.2f}" for s in range(n))
                + ")"
            )
        ref = _published(cell, finished[0])
        published = " / ".join(f"{x:.1f}" for x in ref["returns"][:k]) if ref else ""
        steps = _steps(float(np.mean([f.record.get("env_steps", 0) for f in finished])))
        family = f"{cell.family} ({cell.variant})" if cell.variant else cell.family
        row = [f"`{cell.name}`", cell.algo, family, steps, str(len(finished)), means, published]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _update_readme(
    readme: Path, cells: list[tuple[Cell, dict[int, SeedResult]]], docs: Path
) -> None:
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme} has no {BEGIN} ... {END} block to put the table in")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    table = "\n".join(summary_table(cells))
    _atomic_write(readme, f"{head}{BEGIN}\n{table}\n{END}{tail}")


def _slug(text: str) -> str:
    keep = "".join(c.lower() if c.isalnum() else "-" for c in text.split("(")[0].strip())
    return "-".join(p for p in keep.split("-") if p)


def _protocol_label(name: str) -> str:
    """An eval's name as the report prints it: ``paper_num-tasks=20_seeds=0`` reads
    ``paper`` (in backticks) then ``(changed: num-tasks 20, seeds 0)``."""
    base, _, changed = name.partition("_")
    if not changed:
        return f"`{base}`"
    return f"`{base}` (changed: {changed.replace('_', ', ').replace('=', ' ')})"


def report(results: Path = RESULTS, docs: Path = DOCS, readme: Path | None = None) -> Path:
    """Write ``docs/results.md`` and ``docs/figures/results-*.png`` from ``results/`` alone.

    With ``readme``, the summary table between its ``<!-- results:begin -->`` and
    ``<!-- results:end -->`` lines is rewritten too.
    """
    found = {p.name: load_cell(p) for p in sorted(results.glob("*")) if p.is_dir()}
    names = [n for n in CELLS if n in found or results == RESULTS]
    names += [n for n in found if n not in CELLS]
    groups: dict[str, list[tuple[Cell, dict[int, SeedResult]]]] = {}
    for name in names:
        seeds = found.get(name, {})
        cell = _cell_for(name, seeds)
        groups.setdefault(cell.group or cell.family, []).append((cell, seeds))
    figures = docs / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Results",
        "",
        "Generated by `python benchmarks/results.py report` from the files under `results/` "
        "alone; do not edit by hand (the findings at the end come from `results/findings.md`). "
        "Each cell is one command, `python benchmarks/results.py run CELL --seeds 0 1 2`, "
        "which trains, resumes a stopped seed and meta-tests on the family's held-out test "
        "tasks. A seed's value is its mean return over the held-out tasks and the meta-test's "
        "sampling seeds; the interval is Student-t over the training seeds. Missing and "
        "unfinished seeds are listed under their cell and left out of its mean.",
        "",
    ]
    written: set[Path] = set()
    for title, cells in groups.items():
        stem = figures / f"results-{_slug(title)}"
        lines += [f"## {title}", ""]
        for cell, seeds in cells:
            lines += _cell_section(cell, seeds)
        if any(seeds for _, seeds in cells):
            _plot_group(title, cells, stem)
            written |= {Path(f"{stem}-learning.png"), Path(f"{stem}-adaptation.png")}
            rel = os.path.relpath(stem, docs)
            lines += [
                f"![learning curves]({rel}-learning.png)",
                f"![adaptation curves]({rel}-adaptation.png)",
                "",
            ]
    # The report owns docs/figures/results-*.png: a figure of a heading that is gone goes too.
    for stale in set(figures.glob("results-*.png")) - written:
        stale.unlink()
    if readme is not None:
        _update_readme(readme, [c for cells in groups.values() for c in cells], docs)
    findings = results / "findings.md"
    if findings.is_file():
        lines += [findings.read_text().rstrip(), ""]
    out = docs / "results.md"
    _atomic_write(out, "\n".join(lines))
    return out


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


def _list() -> int:
    for cell in CELLS.values():
        try:
            total = iterations(cell)
            steps, _ = env_steps(cell)
        except (ImportError, ValueError) as exc:  # e.g. Meta-World not installed here
            print(f"{cell.name:<32} {cell.algo:<12} {cell.family}: not here ({exc})")
            continue
        print(
            f"{cell.name:<32} {cell.algo:<12} {cell.family}/{cell.variant or 'default'}: "
            f"{total} iterations, at most {steps / 1e6:.1f}M env steps, protocol {cell.protocol}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/results.py", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the cells, their iterations and budgets")
    run = sub.add_parser("run", help="train, resume and meta-test the seeds of a cell")
    run.add_argument("cell", help="a cell name (see list)")
    run.add_argument("--seeds", type=int, nargs="+", help="default: the cell's planned seeds")
    run.add_argument("--jobs", type=int, default=1, help="seeds at once, one process each")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    run.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    run.add_argument("--runs", type=Path, default=RUNS, help=argparse.SUPPRESS)
    syn = sub.add_parser(
        "sync", help="publish the seeds still training as unfinished, with their metrics so far"
    )
    syn.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    syn.add_argument("--runs", type=Path, default=RUNS, help=argparse.SUPPRESS)
    rep = sub.add_parser("report", help="write docs/results.md and its figures")
    rep.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    rep.add_argument("--docs", type=Path, default=DOCS, help=argparse.SUPPRESS)
    rep.add_argument("--readme", type=Path, default=ROOT / "README.md", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.command == "list":
        return _list()
    if args.command == "sync":
        for record in sync(args.results, args.runs):
            print(_seed_line(record))
        return 0
    if args.command == "report":
        print(f"wrote {report(args.results, args.docs, args.readme)} and {args.readme}'s table")
        return 0
    if args.cell not in CELLS:
        from metarl.registry import close_matches

        print(
            f"results.py run: unknown cell {args.cell!r}; cells are {sorted(CELLS)}"
            + close_matches(args.cell, list(CELLS)),
            file=sys.stderr,
        )
        return 2
    if args.jobs < 1:
        print(f"results.py run: --jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    cell = CELLS[args.cell]
    seeds = args.seeds if args.seeds is not None else list(cell.seeds)
    return run_cell(cell, seeds, args.jobs, args.results, args.runs, not args.no_progress)


if __name__ == "__main__":
    raise SystemExit(main())
