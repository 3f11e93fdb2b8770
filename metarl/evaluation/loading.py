"""Loading a run folder for evaluation: its agent (from the latest or a named checkpoint), its
family (a built-in one by name, or its ``--tasks`` sampler built again) and its config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metarl.agent import MetaAgent, config_from_dict
from metarl.runs import RunError, latest_checkpoint, load_checkpoint, read_run_config

if TYPE_CHECKING:
    from metarl.family import TaskFamily


@dataclass
class LoadedRun:
    """A meta-trained agent rebuilt from its run folder.

    Attributes:
        path: the run folder.
        algo: the agent's registry name (``maml-trpo``, ...).
        agent: the agent with the checkpoint's weights.
        family: the task family with the run's variant and horizon.
        config: the run's whole ``config.json``.
        checkpoint: the checkpoint file that was loaded.
        iteration: meta-iterations the checkpoint had done.
    """

    path: Path
    algo: str
    agent: MetaAgent
    family: TaskFamily
    config: dict[str, Any]
    checkpoint: Path
    iteration: int

    @property
    def name(self) -> str:
        """The run folder's name (used in plots, CSV rows and video names)."""
        return self.path.resolve().name


def _checkpoint_path(run_dir: Path, checkpoint: str | Path | int | None) -> Path:
    if checkpoint is None:
        return latest_checkpoint(run_dir)
    if isinstance(checkpoint, int) or (isinstance(checkpoint, str) and checkpoint.isdigit()):
        path = run_dir / "checkpoints" / f"iter_{int(checkpoint):06d}.pt"
    else:
        path = Path(checkpoint)
        if not path.is_absolute() and not path.exists():
            path = run_dir / "checkpoints" / path
    if not path.is_file():
        kept = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))
        raise RunError(f"checkpoint {checkpoint!r} not found in {run_dir}; it has {kept}")
    return path


def load_run(
    path: str | Path,
    checkpoint: str | Path | int | None = None,
    device: str | torch.device = "cpu",
) -> LoadedRun:
    """Rebuild the agent and task family of a run folder from a checkpoint.

    A run trained with ``--tasks module:callable`` gets its sampler built again, as a
    :class:`~metarl.gym_family.SamplerFamily`.

    Args:
        path: the run folder (``runs/maml-trpo-HalfCheetahVel-...``).
        checkpoint: None for ``checkpoints/latest.pt``, an iteration number for
            ``checkpoints/iter_XXXXXX.pt``, or a checkpoint file.
        device: where the agent's tensors go.

    Raises:
        RunError: a missing folder, a folder without config or checkpoint, one written by a
            newer metarl, an unknown algorithm, a checkpoint that does not fit the config, or
            a custom sampler that was passed from Python (no ``--tasks``) or fails to build.
    """
    from metarl.registry import agent_classes

    run_dir = Path(path)
    saved = read_run_config(run_dir)
    missing = [k for k in ("algo", "config", "family") if k not in saved]
    if missing:
        raise RunError(f"{run_dir}/config.json is incomplete: it lacks {missing}")
    algo = saved["algo"]
    registry = agent_classes()
    if algo not in registry:
        raise RunError(
            f"{run_dir} was made by {algo!r}, which this metarl does not know; "
            f"it knows {sorted(registry)}"
        )
    agent_cls = registry[algo]
    fam = saved["family"]
    try:
        family = _run_family(run_dir, fam)
        config = config_from_dict(agent_cls.config_cls, saved["config"])
    except RunError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{run_dir}/config.json cannot be used: {exc}") from exc
    ckpt = _checkpoint_path(run_dir, checkpoint)
    state = load_checkpoint(ckpt, map_location=device)
    if state.get("algo", algo) != algo:
        raise RunError(f"{ckpt} is a {state.get('algo')!r} checkpoint, the run is {algo!r}")
    agent = agent_cls(config, family.observation_space, family.action_space, torch.device(device))
    try:
        agent.load_state_dict(state["agent"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise RunError(f"{ckpt} does not fit the run's {algo} config: {exc}") from exc
    return LoadedRun(run_dir, algo, agent, family, saved, ckpt, int(state["iteration"]))


def _run_family(run_dir: Path, fam: dict[str, Any]) -> TaskFamily:
    """The family a run trained on: a built-in one, or its ``--tasks`` sampler built again."""
    from metarl.gym_family import SamplerFamily
    from metarl.registry import make_family
    from metarl.tasks import load_task_sampler

    if not fam.get("custom"):
        return make_family(fam["name"], variant=fam.get("variant"), horizon=fam.get("horizon"))
    spec = fam.get("tasks")
    if spec is None:
        raise RunError(
            f"{run_dir} was trained on a task sampler passed from Python ({fam.get('name')!r}) "
            "and cannot be rebuilt; train with --tasks module:callable (RunArgs.tasks) so that "
            "eval, render and --resume can"
        )
    try:
        sampler = load_task_sampler(spec)
    except ValueError as exc:
        raise RunError(f"{run_dir} was trained on --tasks {spec}, which fails now: {exc}") from exc
    return SamplerFamily(sampler, horizon=fam.get("horizon"), source=spec)
