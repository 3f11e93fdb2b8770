"""The core (``metarl/``) never imports the families or the agents it is given.

``metarl.envs`` and ``metarl.agents`` build on the core and register by name in
:mod:`metarl.registry`; the core reaches them only through that registry.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import metarl
from metarl import registry

CORE = Path(metarl.__file__).resolve().parent
FORBIDDEN = ("metarl.envs", "metarl.agents")


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, at module level or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            module = node.module
            if node.level:  # relative: resolve against the file's package
                package = ".".join(path.relative_to(CORE.parent).parent.parts)
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{module}"
            found += [(node.lineno, module)]
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _core_files() -> list[Path]:
    # The installed tree maps envs/ and agents/ into metarl/; a checkout keeps them apart.
    return [
        p
        for p in sorted(CORE.rglob("*.py"))
        if p.relative_to(CORE).parts[0] not in ("envs", "agents")
    ]


def test_core_files_are_found() -> None:
    names = {p.name for p in _core_files()}
    assert {"train.py", "meta_test.py", "sampler.py", "registry.py", "family.py"} <= names


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_imports_neither_envs_nor_agents(path: Path) -> None:
    bad = [
        f"line {line}: {module}"
        for line, module in _imports(path)
        if any(module == f or module.startswith(f + ".") for f in FORBIDDEN)
    ]
    assert not bad, f"{path.relative_to(CORE.parent)} imports {bad}; use metarl.registry"


def test_importing_the_core_loads_no_family_or_agent() -> None:
    core = [
        "metarl." + ".".join(p.relative_to(CORE).with_suffix("").parts)
        for p in _core_files()
        if p.name not in ("__init__.py", "__main__.py")
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {core!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('metarl.envs', 'metarl.agents'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registry_finds_the_installed_families_and_agents() -> None:
    assert {"HalfCheetahVel", "Point2DNav", "AntDir", "ML1"} <= set(registry.family_names())
    assert set(registry.agent_names()) >= {"maml-trpo", "reptile-ppo", "rl2-ppo"}
    family = registry.make_family("Point2DNav", variant="maml-rllab")
    assert family.name == "Point2DNav" and family.variant == "maml-rllab"
    assert registry.agent_class("maml-trpo").name == "maml-trpo"


def test_unknown_names_are_one_clear_line() -> None:
    with pytest.raises(ValueError, match=r"unknown task family 'HalfCheetahVell'.*Did you mean"):
        registry.make_family("HalfCheetahVell")
    with pytest.raises(ValueError, match=r"unknown algorithm 'maml-trp'.*choose one of"):
        registry.agent_class("maml-trp")
    with pytest.raises(ValueError, match=r"ML1 takes an argument: ML1-<env>"):
        registry.make_family("ML1")


def test_a_family_registered_at_run_time_is_built_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from metarl.envs.point2d import Point2DNav

    monkeypatch.setattr(registry, "_families", dict(registry._families))  # leave no trace

    class MyNav(Point2DNav):
        name = "MyNav-test"

    registry.register_family(MyNav)
    assert isinstance(registry.make_family("MyNav-test"), MyNav)
    with pytest.raises(ValueError, match="already registered"):
        registry.register_family(type("Other", (Point2DNav,), {"name": "MyNav-test"}))


def test_an_install_without_entry_points_says_how_to_fix_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What an environment installed before the entry points existed looks like.
    monkeypatch.setattr(registry, "_agents", {})
    monkeypatch.setattr(registry, "_discovered", {registry.FAMILY_GROUP})
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    with pytest.raises(ValueError, match=r"no algorithms are registered.*pip install -e \."):
        registry.agent_class("maml-trpo")
