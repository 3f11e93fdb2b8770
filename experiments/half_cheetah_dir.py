"""HalfCheetahDir: run HalfCheetah forward (d = +1) or backward (d = -1).

Paper preset: ``--algo maml-trpo --preset paper`` follows Finn et al. 2017's HalfCheetahDir
run: meta-batch 40, 20 episodes per task, inner step 0.1, TRPO max KL 0.02 (the run behind
the paper's figure, ``maml1_fbs20_mbs40_flr_0.1_mlr0.02/itr_100``, not the 0.01 of the other
families), a (100, 100) ReLU policy, 100 iterations at H = 200. The paper's cheetah was an
rllab env: one MuJoCo step per action, the centre of mass in the observation and its velocity
in the reward. Add
``--variant maml-rllab`` to train that env (``maml-100hz``: the rate alone), and
``metarl eval RUN --protocol paper`` compares with the published -50.7 / 293.2 / 313.5 / 315.7
after 0..3 steps. RL^2-PPO's
``default`` preset is garage's RL^2-PPO HalfCheetah example. Reptile-PPO has no published
setting.

Usage::

    python experiments/half_cheetah_dir.py --algo maml-trpo --preset quick
    python experiments/half_cheetah_dir.py --algo reptile-ppo --iterations 50 --seed 1
    python experiments/half_cheetah_dir.py --algo maml-trpo --preset paper --num-workers 4 \
        --backend processes --variant maml-rllab
    python experiments/half_cheetah_dir.py --help      # every run and agent option
"""

from _common import main

FAMILY = "HalfCheetahDir"

if __name__ == "__main__":
    raise SystemExit(main(FAMILY, __doc__ or ""))
