"""Task families and agents by name: registries the core owns, as Gymnasium's registry works.

The core never imports :mod:`metarl.envs` or :mod:`metarl.agents`. They (and any other
installed package) declare what they provide as entry points in their ``pyproject.toml``::

    [project.entry-points."metarl.families"]
    HalfCheetahVel = "metarl.envs.half_cheetah:HalfCheetahVel"

    [project.entry-points."metarl.agents"]
    maml-trpo = "metarl.agents.maml_trpo:MAMLTRPO"

and a name is imported only when it is first looked up. Code can also register a class at run
time with :func:`register_family` / :func:`register_agent` (importing :mod:`metarl.envs` and
:mod:`metarl.agents` registers the built-in ones that way too). The command line, the
experiment scripts and the benchmarks are the one place that turns names into objects, through
:func:`make_family` and :func:`agent_class`.

A family class with a ``from_name(name, **kwargs)`` class method also answers names that start
with its own and a dash: ``ML1`` builds ``ML1-reach-v3``.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metarl.agent import MetaAgent
    from metarl.family import TaskFamily

__all__ = [
    "agent_class",
    "agent_classes",
    "agent_names",
    "close_matches",
    "family_class",
    "family_names",
    "make_family",
    "register_agent",
    "register_family",
]

FAMILY_GROUP = "metarl.families"
AGENT_GROUP = "metarl.agents"

_families: dict[str, type[TaskFamily] | EntryPoint] = {}
_agents: dict[str, type[MetaAgent] | EntryPoint] = {}
_discovered: set[str] = set()
_NOTHING_INSTALLED = (
    "no {what} are registered: metarl's entry points ({group}) are missing from this "
    "environment, as after an install older than the code; reinstall it (pip install -e .)"
)


def close_matches(name: str, options: Sequence[str]) -> str:
    """`` Did you mean ...?`` for the options closest to ``name`` (empty when none is close)."""
    close = difflib.get_close_matches(name, list(options), n=3)
    return f" Did you mean {', '.join(close)}?" if close else ""


def _discover(group: str, table: dict[str, Any]) -> None:
    """Add the installed entry points of ``group`` (once; a registered class wins).

    Raises:
        ValueError: nothing at all is registered (an environment whose metarl install
            predates its entry points), with the command that fixes it.
    """
    if group not in _discovered:
        _discovered.add(group)
        for ep in entry_points(group=group):
            table.setdefault(ep.name, ep)
    if not table:
        what = "task families" if group == FAMILY_GROUP else "algorithms"
        raise ValueError(_NOTHING_INSTALLED.format(what=what, group=group))


def _resolve(table: dict[str, Any], name: str) -> Any:
    value = table[name]
    if isinstance(value, EntryPoint):
        value = value.load()
        table[name] = value
    return value


def _register(table: dict[str, Any], name: str, cls: type, kind: str) -> None:
    current = table.get(name)
    if current is not None and not isinstance(current, EntryPoint) and current is not cls:
        raise ValueError(
            f"{kind} {name!r} is already registered as {current.__module__}."
            f"{current.__qualname__}; pick another name for {cls.__module__}.{cls.__qualname__}"
        )
    table[name] = cls


# -- task families ---------------------------------------------------------------------------


def register_family(cls: type[TaskFamily], name: str | None = None) -> type[TaskFamily]:
    """Make ``cls`` known as ``name`` (default: ``cls.name``); returns ``cls`` (a decorator).

    Raises:
        ValueError: another class already has that name.
    """
    _register(_families, name or cls.name, cls, "task family")
    return cls


def family_names() -> list[str]:
    """Every registered and installed family name, in registration order."""
    _discover(FAMILY_GROUP, _families)
    return list(_families)


def family_class(name: str) -> type[TaskFamily]:
    """The family class called ``name`` (a prefix family for ``<prefix>-<arg>`` names).

    Raises:
        ValueError: no family has that name; the message lists the names there are.
    """
    _discover(FAMILY_GROUP, _families)
    if name in _families:
        return _resolve(_families, name)
    prefix = name.split("-", 1)[0]
    if prefix != name and prefix in _families:
        cls = _resolve(_families, prefix)
        if hasattr(cls, "from_name"):
            return cls
    raise ValueError(
        f"unknown task family {name!r}; {_family_listing()}." + close_matches(name, [*_families])
    )


def make_family(name: str, **kwargs: Any) -> TaskFamily:
    """Build the family called ``name`` (``"HalfCheetahVel"``, ``"ML1-reach-v3"``) with its
    options (``variant=``, ``horizon=``, ...)."""
    cls = family_class(name)
    if hasattr(cls, "from_name"):
        if name == cls.name:
            raise ValueError(f"{name} takes an argument: {_pattern(name)}")
        return cls.from_name(name, **kwargs)
    return cls(**kwargs)


def _pattern(name: str) -> str:
    value = _families[name]
    if isinstance(value, EntryPoint):
        return name
    return str(getattr(value, "name_pattern", name))


def _family_listing() -> str:
    return "families are " + ", ".join(_pattern(n) for n in _families)


# -- agents ----------------------------------------------------------------------------------


def register_agent(cls: type[MetaAgent], name: str | None = None) -> type[MetaAgent]:
    """Make the agent ``cls`` known as ``name`` (default: ``cls.name``); returns ``cls``.

    Raises:
        ValueError: another class already has that name.
    """
    _register(_agents, name or cls.name, cls, "algorithm")
    return cls


def agent_names() -> list[str]:
    """Every registered and installed algorithm name, in registration order."""
    _discover(AGENT_GROUP, _agents)
    return list(_agents)


def agent_classes() -> dict[str, type[MetaAgent]]:
    """Algorithm name -> agent class, for every registered and installed agent."""
    return {name: agent_class(name) for name in agent_names()}


def agent_class(name: str) -> type[MetaAgent]:
    """The agent class called ``name`` (``"maml-trpo"``).

    Raises:
        ValueError: no agent has that name; the message lists the names there are.
    """
    _discover(AGENT_GROUP, _agents)
    if name not in _agents:
        raise ValueError(
            f"unknown algorithm {name!r}; choose one of {sorted(_agents)}"
            + close_matches(name, list(_agents))
        )
    return _resolve(_agents, name)
