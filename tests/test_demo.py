"""`make demo` shows adaptation: on its own budget, for two seeds, the meta-test's return rises
clearly with each adaptation step (what the README says the demo prints)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from metarl.cli import main
from metarl.evaluation import evaluate_run, load_run, make_protocol

ROOT = Path(__file__).resolve().parent.parent


def _demo_commands() -> list[list[str]]:
    """The ``metarl`` commands of the Makefile's demo target, as argument lists."""
    text = (ROOT / "Makefile").read_text()
    body = text.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    return [
        line.split("-m metarl", 1)[1].split() for line in body.splitlines() if "-m metarl" in line
    ]


def test_the_demo_trains_evaluates_and_renders_with_the_same_step_sizes() -> None:
    train, evaluate, render = _demo_commands()
    assert train[:2] == ["train", "maml-trpo"] and evaluate[0] == "eval" and render[0] == "render"
    sizes = [
        re.search(r"--step-sizes ([\d. ]+?)(?= --|$)", " ".join(c)) for c in (evaluate, render)
    ]
    assert all(sizes) and sizes[0].group(1) == sizes[1].group(1)  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_the_demo_adapts_clearly_at_every_step(seed: int, tmp_path: Path) -> None:
    train, evaluate, _ = _demo_commands()
    args = [a for a in train if not a.startswith("$(")]
    i = args.index("--seed")
    args[i + 1] = str(seed)
    args = [a for a in args if a != "--run-dir"] + ["--run-dir", str(tmp_path / "run")]
    assert main([*args, "--no-progress"]) == 0
    sizes = evaluate[evaluate.index("--step-sizes") + 1 :][:2]
    protocol = make_protocol("quick", "Point2DNav", step_sizes=[float(s) for s in sizes])
    result = evaluate_run(load_run(tmp_path / "run"), protocol, baseline_tasks=0, progress=False)
    steps = result.summaries()
    # Measured on seeds 0 and 1: -29.5 / -12.8 / -6.4 and -32.8 / -13.5 / -7.6.
    for before, after in itertools.pairwise(steps):
        assert after.ci_low > before.ci_high, [(s.mean, s.ci_low, s.ci_high) for s in steps]
