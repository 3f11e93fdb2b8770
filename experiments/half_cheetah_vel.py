"""HalfCheetahVel: run HalfCheetah at a goal velocity v* ~ U[0, 2] (maml) or U[0, 3] (pearl).

Paper preset: ``--algo maml-trpo --preset paper`` follows Finn et al. 2017's HalfCheetahVel
run: meta-batch 40, 10 episodes per task, inner step 0.1, TRPO max KL 0.01, a (100, 100) ReLU
policy, 475 iterations at H = 200. The paper's cheetah was an rllab env: one MuJoCo step per
action, the centre of mass in the observation and its velocity in the reward. Add
``--variant maml-rllab`` to train that env (``maml-100hz``: the rate alone); then
``metarl eval RUN --protocol paper`` draws the meta-test against the published numbers
(-129.5 / -78.6 / -66.6 / -60.8 after 0..3 steps).
``--algo rl2-ppo --preset varibad`` uses the RL^2 baseline settings of VariBAD's cheetah-vel
config (use ``--variant pearl`` for its velocity range). Reptile-PPO has no published setting.

Usage::

    python experiments/half_cheetah_vel.py --algo maml-trpo --preset quick
    python experiments/half_cheetah_vel.py --algo reptile-ppo --iterations 50 --seed 1
    python experiments/half_cheetah_vel.py --algo maml-trpo --preset paper --num-workers 4 \
        --backend processes --variant maml-rllab
    python experiments/half_cheetah_vel.py --help      # every run and agent option
"""

from _common import main

FAMILY = "HalfCheetahVel"

if __name__ == "__main__":
    raise SystemExit(main(FAMILY, __doc__ or ""))
