"""HumanoidDir: run the Humanoid in a direction theta ~ U[0, 2 pi] (PEARL's humanoid-dir).

No published MAML-TRPO, Reptile-PPO or RL^2-PPO setting exists for this family (PEARL
publishes learning curves of other methods only); ``--preset paper`` applies the MAML paper's
general hyperparameters (meta-batch 40, 20 episodes per task, (100, 100) ReLU, 500 iterations).

Usage::

    python experiments/humanoid_dir.py --algo maml-trpo --preset quick
    python experiments/humanoid_dir.py --algo reptile-ppo --iterations 50 --seed 1
    python experiments/humanoid_dir.py --algo maml-trpo --preset paper --num-workers 4 \
        --backend processes
    python experiments/humanoid_dir.py --help      # every run and agent option
"""

from _common import main

FAMILY = "HumanoidDir"

if __name__ == "__main__":
    raise SystemExit(main(FAMILY, __doc__ or ""))
