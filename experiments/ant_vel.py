"""AntVel: run the Ant at a goal velocity v* ~ U[0, 3].

Paper preset: ``--algo maml-trpo --preset paper`` follows Finn et al. 2017's AntVel run:
meta-batch 40, 20 episodes per task, inner step 0.1, TRPO max KL 0.01, a (100, 100) ReLU policy,
375 iterations at H = 200; ``metarl eval RUN --protocol paper`` compares with the published
30.6 / 96.7 / 100.1 / 101.4. No published setting for Reptile-PPO or RL^2-PPO.

Usage::

    python experiments/ant_vel.py --algo maml-trpo --preset quick
    python experiments/ant_vel.py --algo reptile-ppo --iterations 50 --seed 1
    python experiments/ant_vel.py --algo maml-trpo --preset paper --num-workers 4 \
        --backend processes
    python experiments/ant_vel.py --help      # every run and agent option
"""

from _common import main

FAMILY = "AntVel"

if __name__ == "__main__":
    raise SystemExit(main(FAMILY, __doc__ or ""))
