"""Every command and code block of README.md runs, as a reader would run it.

The README's fenced blocks are parsed here, so a block added to it is tested without editing
this file, and a block that this file does not know how to run fails:

- ``python`` blocks run as written, each as a script in a shared scratch folder (their
  ``runs/...`` paths are relative to it), with the interpreter running the tests.
- ``bash`` blocks are split into command lines (``\\`` continuations joined, comments dropped):
  ``metarl ...`` runs as ``python -m metarl ...``; ``python experiments/<family>.py ...`` and
  ``python benchmarks/results.py list`` run from the scratch folder, which links
  ``experiments/`` and ``benchmarks/`` to the checkout. ``make TARGET`` is not run (``make demo``
  and ``make test`` are what CI runs), only checked to be a Makefile target, and
  ``pip install ...`` only checked against pyproject's extras and dependencies.
- ``text`` blocks are listings and are not run; any other fence fails.

Commands run in README order, each after the commands above it that create the run folders it
reads (``--run-dir runs/X`` creates ``runs/X``), so the quick start's ``train``, ``eval``,
``render``, ``--resume`` and the Python example run on one real run folder.

Only long trainings get smaller budgets (see :func:`tiny_budget`): a training command runs as
written when it is a ``quick`` preset on Point2DNav (the demo's size, under a minute of one
core); any other (``paper`` presets, HalfCheetah families: minutes to hours) runs one iteration
of the smallest batch that still exercises the same code path (same agent, family, variant,
preset and backend). Everything that starts a training, a meta-test, a video or a run folder's
Python example is marked ``slow``.

Besides: ``--help`` of every command in the README exits 0, every ``--flag`` the README names
is in some command's help, the README's results table names only cells that
``benchmarks/results.py list`` knows, and no command leaves ``MUJOCO_LOG.TXT`` behind.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TIMEOUT_S = 600

TINY = {
    "maml-trpo": {
        "--meta-batch-size": ["2"],
        "--episodes-per-task": ["1"],
        "--hidden-sizes": ["8"],
    },
    "reptile-ppo": {
        "--meta-batch-size": ["2"],
        "--episodes-per-task": ["1"],
        "--num-adapt-steps": ["1"],
        "--update-epochs": ["1"],
        "--num-minibatches": ["1"],
    },
    "rl2-ppo": {
        "--meta-batch-size": ["2"],
        "--episodes-per-trial": ["2"],
        "--update-epochs": ["1"],
        "--num-minibatches": ["1"],
        "--hidden-size": ["8"],
    },
}
"""Per agent, the smallest batch: 2 tasks, one episode each (RL^2: one 2-episode trial), one
optimizer pass, a tiny network. With ``--iterations 1 --horizon 10`` (:func:`tiny_budget`)."""


# -- the README's blocks and commands -------------------------------------------------------


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int
    """Line of the opening fence in README.md (1-based)."""


@dataclass(frozen=True)
class Command:
    """One thing the README asks a reader to run: a command line or a Python block."""

    kind: str
    """``metarl``, ``experiment``, ``results``, ``make``, ``pip``, ``python`` or ``unknown``."""
    argv: tuple[str, ...]
    line: int
    source: str
    code: str = ""
    """A Python block's code."""
    needs: tuple[str, ...] = field(default=())
    """Run folders (``runs/...``) it reads."""
    creates: str | None = None
    """The run folder it writes (``--run-dir``)."""

    @property
    def id(self) -> str:
        words = self.source.split()
        return f"L{self.line}:" + "-".join(words[:4])[:60]


def readme_blocks(text: str) -> list[Block]:
    blocks = []
    for match in re.finditer(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", text, re.M | re.S):
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(Block(match.group(1).strip(), match.group(2), line))
    return blocks


def flag_value(argv: tuple[str, ...] | list[str], flag: str) -> str | None:
    for i, tok in enumerate(argv):
        if tok == flag and i + 1 < len(argv):
            return argv[i + 1]
        if tok.startswith(flag + "="):
            return tok.split("=", 1)[1]
    return None


def classify(argv: list[str], line: int, source: str) -> Command:
    kind = "unknown"
    if argv[0] == "metarl":
        kind = "metarl"
    elif argv[0] in ("make", "pip"):
        kind = argv[0]
    elif argv[0] == "python" and len(argv) > 1:
        if re.fullmatch(r"experiments/[a-z0-9_]+\.py", argv[1]):
            kind = "experiment"
        elif argv[1:3] == ["benchmarks/results.py", "list"]:
            # run / sync / report train for hours or rewrite docs/: the README may name them
            # in prose, not as commands to run.
            kind = "results"
    creates = flag_value(argv, "--run-dir")
    needs = tuple(tok.rstrip("/") for tok in argv if tok.startswith("runs/") and tok != creates)
    return Command(kind, tuple(argv), line, source, needs=needs, creates=creates)


def readme_commands(text: str) -> list[Command]:
    commands: list[Command] = []
    for block in readme_blocks(text):
        if block.lang == "python":
            needs = tuple(re.findall(r"""["'](runs/[^"']+?)/?["']""", block.text))
            first = next(line for line in block.text.splitlines() if line.strip())
            commands.append(Command("python", (), block.line, first, code=block.text, needs=needs))
        elif block.lang == "bash":
            joined = block.text.replace("\\\n", " ")
            for n, raw in enumerate(joined.splitlines()):
                argv = shlex.split(raw, comments=True)
                if argv:
                    line = block.line + 1 + n + _continued_lines_before(block.text, n)
                    commands.append(classify(argv, line, raw.split(" #")[0].strip()))
        elif block.lang != "text":
            commands.append(Command("unknown", (), block.line, f"a ```{block.lang} block"))
    return commands


def _continued_lines_before(text: str, joined_index: int) -> int:
    """How many source lines were joined into the first ``joined_index`` joined lines."""
    extra, seen = 0, 0
    for raw in text.splitlines():
        if seen == joined_index:
            break
        if raw.rstrip().endswith("\\"):
            extra += 1
        else:
            seen += 1
    return extra


README_TEXT = README.read_text()
COMMANDS = readme_commands(README_TEXT)
RUNNABLE = [c for c in COMMANDS if c.kind in ("metarl", "experiment", "results", "python")]


def is_slow(command: Command) -> bool:
    """Fast: the listings (``metarl list``, ``results.py list``, help, version); slow: anything
    that trains, meta-tests, renders or reads a run folder."""
    if command.kind == "results":
        return False
    if command.kind == "metarl":
        return not (
            command.argv[1:2] == ("list",) or set(command.argv[1:]) & {"--help", "-h", "--version"}
        )
    return command.kind in ("experiment", "python")


def marked(command: Command) -> object:
    return pytest.param(
        command, id=command.id, marks=[pytest.mark.slow] if is_slow(command) else []
    )


# -- running them --------------------------------------------------------------------------


def family_of(argv: tuple[str, ...]) -> str:
    if argv[0] == "python":  # an experiment script fixes its family
        script = (ROOT / argv[1]).read_text()
        return re.search(r'^FAMILY = "([^"]+)"', script, re.M).group(1)  # type: ignore[union-attr]
    return flag_value(argv, "--env") or "HalfCheetahVel"  # RunArgs.env's default


def training_algo(argv: tuple[str, ...]) -> str | None:
    """The agent a command trains, or None for a command that does not start a training."""
    if argv[0] == "metarl" and argv[1:2] == ("train",) and len(argv) > 2:
        return None if argv[2].startswith("-") else argv[2]
    if argv[0] == "python" and argv[1].startswith("experiments/"):
        return flag_value(argv, "--algo") or "maml-trpo"
    return None


def tiny_budget(argv: tuple[str, ...]) -> tuple[str, ...]:
    """``argv`` with a one-iteration budget where it is a long training, else as written.

    A training runs as written when it resumes a run (the README's ``--resume`` lines extend
    the quick start's run by a few iterations) or is the ``quick`` preset on Point2DNav (the
    demo's size). Any other (``--preset paper`` or ``default``, a HalfCheetah family, ...) takes
    minutes to hours on two cores, so it gets ``--iterations 1 --horizon 10`` and :data:`TINY`
    (2 tasks x 1 episode, one optimizer pass, a tiny network) in place of the same flags in the
    README: the agent, family, variant, preset and backend stay as written.
    """
    algo = training_algo(argv)
    if algo is None or flag_value(argv, "--resume") is not None:
        return argv
    preset = flag_value(argv, "--preset") or "quick"
    if preset == "quick" and family_of(argv) == "Point2DNav":
        return argv
    return with_flags(argv, {"--iterations": ["1"], "--horizon": ["10"], **TINY[algo]})


def with_flags(argv: tuple[str, ...], flags: dict[str, list[str]]) -> tuple[str, ...]:
    """``argv`` with every flag of ``flags`` (and its values) removed, then ``flags`` added."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        name = argv[i].split("=", 1)[0]
        if name in flags:
            i += 1
            if "=" not in argv[i - 1]:
                while i < len(argv) and not argv[i].startswith("--"):
                    i += 1
            continue
        out.append(argv[i])
        i += 1
    for name, values in flags.items():
        out += [name, *values]
    return tuple(out)


def process_argv(command: Command, workdir: Path) -> list[str]:
    if command.kind == "python":
        script = workdir / f"readme_block_line{command.line}.py"
        script.write_text(command.code)
        return [sys.executable, script.name]
    argv = tiny_budget(command.argv)
    if argv[0] == "metarl":
        return [sys.executable, "-m", "metarl", *argv[1:]]
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


def run_process(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # One thread per process: the suite shares two cores (see RunArgs.torch_threads).
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reader's working folder: empty but for links to the checkout's scripts."""
    path = tmp_path_factory.mktemp("readme")
    for name in ("experiments", "benchmarks"):
        (path / name).symlink_to(ROOT / name, target_is_directory=True)
    return path


_DONE: dict[int, subprocess.CompletedProcess[str]] = {}
"""Commands already run in this session (by README line), so that each runs once."""


def run_command(command: Command, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run ``command`` after the commands above it that create the run folders it reads."""
    if command.line in _DONE:
        return _DONE[command.line]
    above = [c for c in RUNNABLE if c.line < command.line]
    for path in command.needs:
        creators = [c for c in above if c.creates is not None and Path(c.creates) == Path(path)]
        assert creators, (
            f"README.md line {command.line} uses {path}, which no command above it creates "
            "(give the command that trains it --run-dir " + path + ")"
        )
        if not (workdir / path).is_dir():
            done = run_command(creators[-1], workdir)
            assert done.returncode == 0, f"{creators[-1].source} failed; see its own test"
    proc = run_process(process_argv(command, workdir), workdir)
    _DONE[command.line] = proc
    return proc


# -- the tests -----------------------------------------------------------------------------


def test_readme_starts_with_the_two_commands() -> None:
    first = readme_blocks(README_TEXT)[0]
    assert first.lang == "bash"
    lines = [shlex.split(line, comments=True) for line in first.text.splitlines()]
    assert [line for line in lines if line] == [["make", "demo"], ["make", "test"]]


def test_readme_parses_into_commands_of_every_kind() -> None:
    # Guards the parser: a README read as no blocks would pass every other test vacuously.
    kinds = {c.kind for c in COMMANDS}
    assert {"python", "metarl", "make"} <= kinds
    assert any(c.creates for c in COMMANDS), "the quick start's train names no --run-dir"


@pytest.mark.parametrize("command", [marked(c) for c in RUNNABLE])
def test_readme_command_runs(command: Command, workdir: Path) -> None:
    proc = run_command(command, workdir)
    assert proc.returncode == 0, (
        f"README.md line {command.line}: {command.source}\n"
        f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    assert not (workdir / "MUJOCO_LOG.TXT").exists(), f"{command.source} wrote MUJOCO_LOG.TXT"
    if command.creates:
        assert (workdir / command.creates / "config.json").is_file()
    if command.argv[:2] == ("metarl", "render"):
        video = re.search(r"^video: (\S+)", proc.stdout, re.M)
        assert video and (workdir / video.group(1)).stat().st_size > 0, proc.stdout
    if command.kind == "results":
        listed = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
        table = re.search(r"<!-- results:begin -->(.*?)<!-- results:end -->", README_TEXT, re.S)
        assert table is not None, "the README lost its results table markers"
        cells = set(re.findall(r"^\| `([a-z0-9-]+)` \|", table.group(1), re.M))
        assert cells and cells <= listed, f"README table cells not in the suite: {cells - listed}"


@pytest.mark.parametrize(
    "command", [pytest.param(c, id=c.id) for c in COMMANDS if c.kind == "unknown"] or [None]
)
def test_readme_has_no_command_this_test_cannot_run(command: Command | None) -> None:
    assert command is None, (
        f"README.md line {command.line}: {command.source!r} is not a command this test knows "
        "how to run (metarl ..., python experiments/<family>.py ..., python benchmarks/"
        "results.py list, make TARGET, pip install ...; fences: bash, python, text): teach "
        "tests/test_readme.py to run it, or show it in prose"
    )


def test_readme_links_resolve() -> None:
    links = re.findall(r"\]\(([^)#\s]+)\)", README_TEXT)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local and [link for link in local if not (ROOT / link).exists()] == []


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M))


@pytest.mark.parametrize(
    "command", [pytest.param(c, id=c.id) for c in COMMANDS if c.kind == "make"]
)
def test_readme_make_targets_exist(command: Command) -> None:
    targets = [tok for tok in command.argv[1:] if "=" not in tok and not tok.startswith("-")]
    assert targets and set(targets) <= makefile_targets(), command.source


@pytest.mark.parametrize("command", [pytest.param(c, id=c.id) for c in COMMANDS if c.kind == "pip"])
def test_readme_pip_installs_name_real_extras(command: Command) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = set(project["optional-dependencies"])
    depends = {re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower() for d in project["dependencies"]}  # type: ignore[union-attr]
    assert command.argv[1] == "install", command.source
    args = list(command.argv[2:])
    specs = []
    while args:
        tok = args.pop(0)
        if tok in ("--index-url", "--extra-index-url", "-i"):
            args.pop(0)
        elif not tok.startswith("-"):
            specs.append(tok)
    assert specs, command.source
    for spec in specs:
        local = re.fullmatch(r"\.(?:\[([a-z0-9,_-]+)\])?", spec)
        if local:
            named = set((local.group(1) or "").split(",")) - {""}
            assert named <= extras, f"{command.source}: no extra {named - extras} in pyproject"
        else:
            assert spec.lower() in depends, f"{command.source}: {spec} is no dependency of metarl"


def help_argvs() -> dict[str, list[str]]:
    """Each distinct command of the README, as the argv of its ``--help``."""
    out: dict[str, list[str]] = {}
    for c in RUNNABLE:
        argv = c.argv
        if c.kind == "metarl":
            out["metarl"] = [sys.executable, "-m", "metarl", "--help"]
            sub = [] if argv[1].startswith("-") else [argv[1]]
            if sub == ["train"]:
                out["metarl train"] = [sys.executable, "-m", "metarl", "train", "--help"]
                algo = training_algo(argv)
                sub += [algo] if algo else []
            if sub:
                out["metarl " + " ".join(sub)] = [sys.executable, "-m", "metarl", *sub, "--help"]
        elif c.kind == "experiment":
            out[argv[1]] = [sys.executable, argv[1], "--help"]
        elif c.kind == "results":
            out[argv[1]] = [sys.executable, argv[1], "--help"]
            out[" ".join(argv[1:3])] = [sys.executable, *argv[1:3], "--help"]
    return out


HELPS = help_argvs()
_HELP_OUT: dict[str, str] = {}


def help_text(name: str, workdir: Path) -> str:
    if name not in _HELP_OUT:
        proc = run_process(HELPS[name], workdir)
        assert proc.returncode == 0, f"{name} --help: exit {proc.returncode}\n{proc.stderr[-3000:]}"
        _HELP_OUT[name] = proc.stdout
    return _HELP_OUT[name]


@pytest.mark.parametrize("name", sorted(HELPS))
def test_readme_command_help_exits_0(name: str, workdir: Path) -> None:
    out = help_text(name, workdir)
    # metarl list takes no options: its --help prints the listing itself.
    assert ("usage" in out.lower()) if name != "metarl list" else "presets" in out


def test_every_flag_the_readme_names_is_in_a_commands_help(workdir: Path) -> None:
    from metarl.registry import agent_classes

    for algo in agent_classes():  # the README names every agent; their flags differ
        HELPS.setdefault(
            f"metarl train {algo}", [sys.executable, "-m", "metarl", "train", algo, "--help"]
        )
    helps = "\n".join(help_text(name, workdir) for name in sorted(HELPS))
    # pip's own flags (--index-url) are pip's.
    text = "\n".join(line for line in README_TEXT.splitlines() if "pip install" not in line)
    text = re.sub(r"`[^`\n]*pip install[^`\n]*`", "", text)
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))
    missing = sorted(
        f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", helps)
    )
    assert not missing, f"README.md names flags no command's --help has: {missing}"
