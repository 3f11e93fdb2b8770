"""One name per concept: the same flag in every command, script and benchmark, booleans as
--flag / --no-flag, old spellings refused with a line naming the new one, and the same metric
key for the same quantity in every agent."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from metarl.cli import RENAMED_FLAGS, main, parse_args

ROOT = Path(__file__).resolve().parents[2]
ALGOS = ["maml-trpo", "reptile-ppo", "rl2-ppo"]
BENCHMARKS = ["maml_trpo", "reptile_ppo", "rl2_ppo", "sampler", "metaworld_batch"]

CONCEPTS = {
    "adaptation steps": {"--num-adapt-steps", "--num-steps", "--adapt-steps", "--inner-steps"},
    "workers": {"--num-workers", "--workers", "--n-workers"},
    "PPO epochs": {"--update-epochs", "--ppo-epochs", "--n-epochs", "--epochs"},
    "value-loss clipping": {"--clip-vloss", "--clip-value-loss"},
    "episodes per task": {"--episodes-per-task", "--episodes", "--rollouts-per-task"},
    "meta-batch size": {"--meta-batch-size", "--num-tasks-per-iteration", "--meta-batch"},
}
"""Each concept's spellings seen in this field's tools; at most one may appear anywhere."""


def flags_of(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))


def benchmark_help(name: str, capsys: pytest.CaptureFixture[str]) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(
            f"bench_{name}", ROOT / f"benchmarks/{name}.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        argv, sys.argv = sys.argv, [f"{name}.py", "--help"]
        try:
            with pytest.raises(SystemExit) as exit_:
                module.main()
        finally:
            sys.argv = argv
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert exit_.value.code == 0
    return capsys.readouterr().out


def all_helps(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for command in (*(["train", a] for a in ALGOS), ["eval"], ["render"]):
        assert main([*command, "--help"]) == 0
        out[" ".join(command)] = capsys.readouterr().out
    spec = importlib.util.spec_from_file_location("common", ROOT / "experiments/_common.py")
    assert spec is not None and spec.loader is not None
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    assert common.main("Point2DNav", "doc", ["--help"]) == 0
    out["experiments/point2d_nav.py"] = capsys.readouterr().out
    for name in BENCHMARKS:
        out[f"benchmarks/{name}.py"] = benchmark_help(name, capsys)
    return out


def test_one_flag_per_concept_and_booleans_as_flag_no_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    helps = all_helps(capsys)
    used: dict[str, set[str]] = {}
    for where, text in helps.items():
        flags = flags_of(text)
        assert flags, where
        for flag in flags:
            used.setdefault(flag, set()).add(where)
        assert "{True,False}" not in text, f"{where} takes a boolean as a value"
        for flag in flags:
            if flag.startswith("--no-"):
                assert "--" + flag[5:] in flags, f"{where}: {flag} without --{flag[5:]}"
        assert not flags & set(RENAMED_FLAGS), f"{where} still has {flags & set(RENAMED_FLAGS)}"
    for concept, spellings in CONCEPTS.items():
        seen = {s: sorted(used[s]) for s in spellings if s in used}
        assert len(seen) <= 1, f"{concept} is spelled {seen}"
    # The shared concepts really are shared (the check above is not vacuous).
    assert len(used["--num-adapt-steps"]) >= 5 and len(used["--num-workers"]) >= 6
    assert {"--progress", "--no-progress"} <= flags_of(helps["train maml-trpo"])
    assert {"--progress", "--no-progress"} <= flags_of(helps["eval"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "runs/x", "--num-steps", "2"], "--num-steps is now --num-adapt-steps"),
        (["render", "runs/x", "--num-steps=2"], "--num-steps is now --num-adapt-steps"),
        (["train", "reptile-ppo", "--ppo-epochs", "2"], "--ppo-epochs is now --update-epochs"),
        (
            ["train", "rl2-ppo", "--clip-value-loss", "True"],
            "--clip-value-loss is now --clip-vloss",
        ),
        (["train", "rl2-ppo", "--progress", "False"], "--progress False is now --no-progress"),
        (["eval", "runs/x", "--progress=True"], "--progress True is now --progress"),
    ],
)
def test_old_spellings_fail_in_one_line_naming_the_new(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_benchmarks_refuse_old_spellings(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="maml_trpo.py")
    parser.add_argument("--num-workers", type=int)
    assert parse_args(parser, ["--num-workers", "3"]).num_workers == 3
    with pytest.raises(SystemExit) as exit_:
        parse_args(parser, ["--workers", "3"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "maml_trpo.py: error: --workers is now --num-workers\n"


TINY = {
    "maml-trpo": ["--meta-batch-size", "2", "--episodes-per-task", "2", "--hidden-sizes", "8"],
    "reptile-ppo": [
        "--meta-batch-size",
        "2",
        "--episodes-per-task",
        "2",
        "--update-epochs",
        "1",
        "--num-minibatches",
        "1",
        "--num-adapt-steps",
        "1",
    ],
    "rl2-ppo": [
        "--meta-batch-size",
        "2",
        "--episodes-per-trial",
        "2",
        "--update-epochs",
        "1",
        "--num-minibatches",
        "1",
        "--hidden-size",
        "8",
    ],
}


def test_same_quantity_same_metric_key_across_agents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = {}
    for algo in ALGOS:
        run_dir = tmp_path / algo
        argv = ["train", algo, "--env", "Point2DNav", "--horizon", "5", "--iterations", "1"]
        assert main([*argv, "--run-dir", str(run_dir), "--no-progress", *TINY[algo]]) == 0
        with (run_dir / "metrics.csv").open() as f:
            keys[algo] = set(next(csv.reader(f)))
    capsys.readouterr()
    namespaces = {"meta", "losses", "trpo", "reptile", "policy", "time"}
    for algo, names in keys.items():
        loose = {k for k in names if "/" in k and k.split("/")[0] not in namespaces}
        assert not loose, f"{algo} logs {loose} outside the namespaces {sorted(namespaces)}"
        assert {"meta/return_pre_adapt", "meta/return_post_adapt", "env_steps"} <= names
        assert {"policy/std", "time/sampling", "time/env_steps_per_s"} <= names
    ppo = {
        f"losses/{k}"
        for k in (
            "policy_loss",
            "value_loss",
            "entropy",
            "approx_kl",
            "clip_fraction",
            "explained_variance",
        )
    }
    assert ppo <= keys["reptile-ppo"] and ppo <= keys["rl2-ppo"]


def test_a_run_saved_under_the_old_names_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    run_dir = tmp_path / "old"
    argv = ["train", "reptile-ppo", "--env", "Point2DNav", "--horizon", "5", "--no-progress"]
    assert main([*argv, "--iterations", "1", "--run-dir", str(run_dir), *TINY["reptile-ppo"]]) == 0
    # What an earlier version wrote: ppo_epochs in config.json, ppo/... columns in metrics.csv.
    config_path = run_dir / "config.json"
    saved = json.loads(config_path.read_text())
    saved["config"]["ppo_epochs"] = saved["config"].pop("update_epochs")
    config_path.write_text(json.dumps(saved))
    metrics = run_dir / "metrics.csv"
    metrics.write_text(metrics.read_text().replace("losses/approx_kl", "ppo/approx_kl", 1))
    resume = ["train", "reptile-ppo", "--resume", str(run_dir), "--no-progress"]
    assert main([*resume, "--iterations", "2", "--update-epochs", "1"]) == 0, capsys.readouterr()
    with metrics.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["iteration"] for r in rows] == ["0", "1"]
    assert "losses/approx_kl" in rows[0] and "ppo/approx_kl" not in rows[0]
    assert rows[0]["losses/approx_kl"] != "" and rows[1]["losses/approx_kl"] != ""
