"""What every registered agent declares, checked against what it does."""

from __future__ import annotations

import pytest
import torch

from metarl.family import FamilyTaskSampler
from metarl.registry import agent_classes, make_family
from metarl.sampling import InlineSampler
from metarl.tasks import Task

AGENTS = agent_classes()


def _agent(name: str):  # type: ignore[no-untyped-def]
    cls = AGENTS[name]
    family = make_family("Point2DNav", horizon=5)
    config = cls.preset("quick", "Point2DNav")
    return cls(config, family.observation_space, family.action_space, torch.device("cpu")), family


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_every_declared_preset_builds_its_config(name: str) -> None:
    cls = AGENTS[name]
    for preset in cls.PRESET_NAMES:
        assert isinstance(cls.preset(preset, "HalfCheetahVel"), cls.config_cls)
    with pytest.raises(ValueError, match="presets are"):
        cls.preset("no-such-preset", "HalfCheetahVel")


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_a_step_size_is_taken_exactly_by_the_agents_that_declare_it(name: str) -> None:
    agent, family = _agent(name)
    sampler = InlineSampler(FamilyTaskSampler(family), agent.policy)
    try:
        policy = agent.exploration_policy(1)
        # RL^2 adapts on one column (a trial) per task; the gradient agents on episodes.
        batch = sampler.sample([Task({"goal": [0.2, 0.1]})], 1 if agent.recurrent else 2, seed=0)
    finally:
        sampler.close()
    if agent.takes_step_size:
        small = agent.adapt(policy, batch, lr=1e-3)
        large = agent.adapt(policy, batch, lr=1e-1)
        assert small.params is not None and large.params is not None
        assert not all(torch.equal(small.params[k], large.params[k]) for k in small.params)
    else:
        with pytest.raises(ValueError, match="takes no step size"):
            agent.adapt(policy, batch, lr=0.1)
        agent.adapt(policy, batch)  # without one it adapts


def test_the_recurrent_agent_is_the_one_with_a_recurrent_policy() -> None:
    for name in AGENTS:
        agent, _ = _agent(name)
        assert agent.recurrent == bool(getattr(agent.policy, "recurrent", False)), name
