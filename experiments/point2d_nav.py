"""Point2DNav: move a point to a goal g ~ U[-0.5, 0.5]^2 (MAML's 2-D navigation, H = 100).

Paper preset: ``--algo maml-trpo --preset paper --variant maml-rllab`` trains as the MAML
paper's code did (meta-batch 20, 20 episodes per task, inner step 0.1, (100, 100) ReLU, 100
iterations, actions in [-1, 1] scaled into the 0.1 step as rllab's ``normalize`` did);
``metarl eval RUN --protocol paper`` then compares with the published -40.4 / -11.7 / -3.3 /
-3.2 (40 rollouts per step). The ``maml`` variant (pytorch-maml-rl's, the action is the
displacement) saturates a unit-scale policy's actions and is not the paper's setting. The
cheap family: every agent's ``quick`` preset learns something here within minutes on a laptop
CPU.

Usage::

    python experiments/point2d_nav.py --algo maml-trpo --preset quick
    python experiments/point2d_nav.py --algo reptile-ppo --iterations 50 --seed 1
    python experiments/point2d_nav.py --algo maml-trpo --preset paper --variant maml-rllab
    python experiments/point2d_nav.py --help      # every run and agent option
"""

from _common import main

FAMILY = "Point2DNav"

if __name__ == "__main__":
    raise SystemExit(main(FAMILY, __doc__ or ""))
