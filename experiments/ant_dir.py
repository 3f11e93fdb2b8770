"""AntDir: run the Ant in a direction: forward/backward (maml) or any angle (promp, pearl).

Paper preset: ``--algo maml-trpo --preset paper`` follows Finn et al. 2017's AntDir run:
meta-batch 40, 40 episodes per task, inner step 0.1, TRPO max KL 0.01, a (100, 100) ReLU policy,
575 iterations at H = 200; ``metarl eval RUN --protocol paper`` (for this family, as its test
script: 40 rollouts per step, step size 0.1 then 0.001) compares with the published
8.7 / 499.1 / 500.7 / 499.1. No published setting for
Reptile-PPO or RL^2-PPO on this family.

Usage::

    python experiments/ant_dir.py --algo maml-trpo --preset quick
    python experiments/ant_dir.py --algo reptile-ppo --iterations 50 --seed 1
    python experiments/ant_dir.py --algo maml-trpo --preset paper --num-workers 4 \
        --backend processes
    python experiments/ant_dir.py --help      # every run and agent option
"""

from _common import main

FAMILY = "AntDir"

if __name__ == "__main__":
    raise SystemExit(main(FAMILY, __doc__ or ""))
