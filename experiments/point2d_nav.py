"""Point2DNav: move a point to a goal g ~ U[-0.5, 0.5]^2 (MAML's 2-D navigation, H = 100).

Paper preset: ``--algo maml-trpo --preset paper`` uses the MAML paper's hyperparameters
(meta-batch 40, 20 episodes per task, inner step 0.1, (100, 100) ReLU) for 500 iterations; the
paper does not state its 2-D navigation iteration count. ``metarl eval RUN --protocol paper``
compares with the published -40.4 / -11.7 / -3.3 / -3.2. The cheap family: every agent's
``quick`` preset learns something here within minutes on a laptop CPU.

Usage::

    python experiments/point2d_nav.py --algo maml-trpo --preset quick
    python experiments/point2d_nav.py --algo reptile-ppo --iterations 50 --seed 1
    python experiments/point2d_nav.py --algo maml-trpo --preset paper --num-workers 4 \
        --backend processes
    python experiments/point2d_nav.py --help      # every run and agent option
"""

from _common import main

FAMILY = "Point2DNav"

if __name__ == "__main__":
    raise SystemExit(main(FAMILY, __doc__ or ""))
