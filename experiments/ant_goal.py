"""AntGoal: walk the Ant to a goal g ~ U[-3, 3]^2 (maml "AntPos") or in a disc (pearl).

Paper preset: ``--algo maml-trpo --preset paper`` applies the MAML paper's hyperparameters
(meta-batch 40, 20 episodes per task, (100, 100) ReLU, 500 iterations); the paper publishes no
table for this family, so there is no number to reproduce. No published setting for
Reptile-PPO or RL^2-PPO.

Usage::

    python experiments/ant_goal.py --algo maml-trpo --preset quick
    python experiments/ant_goal.py --algo reptile-ppo --iterations 50 --seed 1
    python experiments/ant_goal.py --algo maml-trpo --preset paper --num-workers 4 \
        --backend processes
    python experiments/ant_goal.py --help      # every run and agent option
"""

from _common import main

FAMILY = "AntGoal"

if __name__ == "__main__":
    raise SystemExit(main(FAMILY, __doc__ or ""))
