"""The published MAML-TRPO numbers (Finn et al. 2017) as data, and when they apply: the same
family, variant, horizon and protocol as the paper's."""

from __future__ import annotations

from dataclasses import dataclass

from metarl.evaluation.protocol import Protocol


@dataclass(frozen=True)
class PublishedCurve:
    """A published meta-test curve and the setting it was measured in.

    Attributes:
        returns: mean return after 0, 1, 2, ... adaptation steps.
        variants, horizon: the family variants that simulate the paper's setting, and its
            episode length.
        episodes_per_step: rollouts per adaptation step.
        num_tasks: test tasks averaged over.
        step_sizes: the inner step sizes of the test.
        source: where the numbers come from.
    """

    returns: tuple[float, ...]
    variants: tuple[str, ...]
    horizon: int
    episodes_per_step: int
    num_tasks: int = 40
    step_sizes: tuple[float, ...] = (0.1, 0.05, 0.05)
    source: str = "Finn et al. 2017, Fig. 5 (MAML-TRPO, result files of the paper's code)"


CHEETAH_AT_100HZ = ("maml-100hz", "maml-rllab")

PUBLISHED_MAML_TRPO: dict[str, PublishedCurve] = {
    # The paper's cheetah ran at rllab's rate, one MuJoCo step per action: the maml-100hz
    # and maml-rllab variants (Gymnasium's v5 cheetah takes five).
    "HalfCheetahVel": PublishedCurve((-129.5, -78.6, -66.6, -60.8), CHEETAH_AT_100HZ, 200, 20),
    "HalfCheetahDir": PublishedCurve((-50.7, 293.2, 313.5, 315.7), CHEETAH_AT_100HZ, 200, 20),
    "AntVel": PublishedCurve((30.6, 96.7, 100.1, 101.4), ("maml",), 200, 20),
    "AntDir": PublishedCurve(
        (8.7, 499.1, 500.7, 499.1), ("maml",), 200, 40, step_sizes=(0.1, 0.001, 0.001)
    ),
    # The paper's point env ran under rllab's normalize(): unit actions scaled into the 0.1
    # step, the maml-rllab variant (maml takes the displacement itself).
    "Point2DNav": PublishedCurve((-40.4, -11.7, -3.3, -3.2), ("maml-rllab",), 100, 40),
}
"""MAML-TRPO's mean return over 40 test tasks after 0..3 steps (REFERENCE.md). Returns are
comparable only under the same horizon, task range, action scaling and simulation rate."""


def published_reference(
    family: str, variant: str, horizon: int, protocol: Protocol
) -> PublishedCurve | None:
    """The published MAML-TRPO curve for this family if the setting matches, else None.

    Matching means: same family, variant and horizon, the same number of test tasks and
    rollouts per step, and the paper's step sizes (``None`` is accepted only for one step,
    where the agent's own step size is the paper's 0.1 by default).
    """
    ref = PUBLISHED_MAML_TRPO.get(family)
    if ref is None or variant not in ref.variants or ref.horizon != horizon:
        return None
    if protocol.num_tasks != ref.num_tasks or protocol.episodes_per_step != ref.episodes_per_step:
        return None
    k = min(protocol.num_steps, len(ref.step_sizes))
    if protocol.step_sizes is None or tuple(protocol.step_sizes[:k]) != ref.step_sizes[:k]:
        return None
    return ref
