"""Every command's --help exits 0 and shows what a newcomer needs; --version; the Gymnasium
ids are registered by ``import metarl`` alone."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from metarl.cli import clean_help, main

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p for p in (ROOT / "experiments").glob("*.py") if not p.name.startswith("_"))
ALGOS = ["maml-trpo", "reptile-ppo", "rl2-ppo"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def flat(out: str) -> str:
    """Help text as one line of words (the boxes and wrapping of the formatter removed)."""
    return " ".join(" ".join(line.strip(" │╭╮╰╯─") for line in out.splitlines()).split())


def load_common() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "experiments_common", ROOT / "experiments/_common.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_top_level_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "--help")
    assert code == 0 and "train ALGO" in out and "--version" in out
    import metarl

    assert run(capsys, "--version") == (0, f"metarl {metarl.__version__}\n")


def test_train_help_lists_agents_and_common_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "train", "--help")
    assert code == 0
    for name in [*ALGOS, "--env", "--preset", "--seed", "--resume", "--num-workers"]:
        assert name in out
    code, out = run(capsys, "train")
    assert code == 2 and "metarl train --help" in out


@pytest.mark.parametrize("algo", ALGOS)
def test_train_algo_help_keeps_paragraphs_and_drops_markup(
    algo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, "train", algo, "--help")
    assert code == 0 and "--meta-batch-size" in out and "--iterations" in out
    assert "`" not in out
    # A docstring wrapped over several source lines is one paragraph, re-wrapped by the
    # help formatter: no line of it is cut short where the source line ended.
    assert "from oversubscribing (torch's threads spin at every barrier" in flat(out)


@pytest.mark.parametrize("command", ["eval", "render", "list"])
def test_other_commands_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, command, "--help")
    assert code == 0
    assert "%%" not in out and "`" not in out


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_script_help_shows_its_algo_option(
    script: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    family = next(
        line.split('"')[1] for line in script.read_text().splitlines() if line.startswith("FAMILY")
    )
    doc = ast_docstring(script)
    # Help needs no env: the Meta-World script shows it without the extra installed too
    # (training then says in one line how to install it).
    assert load_common().main(family, doc, ["--help"]) == 0
    out = capsys.readouterr().out
    assert "--algo {maml-trpo,reptile-ppo,rl2-ppo}" in out
    assert f"(default: {family})" in flat(out) and "`" not in out


def ast_docstring(script: Path) -> str:
    import ast

    return ast.get_docstring(ast.parse(script.read_text())) or ""


def test_clean_help_joins_lines_and_keeps_literal_blocks() -> None:
    text = "First ``code`` line\n    goes on.\n\nUsage::\n\n    a --b\n    c\n"
    assert clean_help(text) == "First code line goes on.\n\nUsage:\n  a --b\n  c"


def test_import_metarl_registers_the_env_ids_without_importing_envs() -> None:
    code = (
        "import sys, gymnasium, metarl\n"
        "assert 'metarl.envs' not in sys.modules and 'mujoco' not in sys.modules\n"
        "env = gymnasium.make('metarl/AntDir-v0', variant='pearl')\n"
        "print(env.unwrapped.family.name, env.unwrapped.family.variant)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["AntDir", "pearl"]


def test_every_family_has_its_entry_point() -> None:
    from importlib.metadata import entry_points

    from metarl.envs import FAMILIES

    assert sorted(ep.name for ep in entry_points(group="metarl.envs")) == sorted(FAMILIES)


@pytest.mark.skipif(
    importlib.util.find_spec("metaworld") is not None, reason="Meta-World is installed here"
)
def test_training_meta_world_without_the_extra_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metarl.cli import main

    run_dir = tmp_path / "run"
    assert main(["train", "maml-trpo", "--env", "ML1-reach-v3", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'metarl[metaworld]'" in err and "\n" not in err
    assert not run_dir.exists()


@pytest.mark.parametrize("command", ["eval", "render"])
def test_eval_and_render_take_torch_threads_like_train(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metarl.cli import main

    assert main([command, "--help"]) == 0
    assert "--torch-threads" in capsys.readouterr().out
    assert main([command, str(tmp_path), "--torch-threads", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--torch-threads must be >= 1" in err and "\n" not in err
