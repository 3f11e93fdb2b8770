"""HalfCheetahParams: HalfCheetah with randomized dynamics (masses, inertias, friction, damping).

No published setting for these agents: the public dynamics-randomized originals need
MuJoCo 1.31. ``--preset paper`` applies the MAML paper's general hyperparameters (meta-batch
40, 20 episodes per task, (100, 100) ReLU, 500 iterations).

Usage::

    python experiments/half_cheetah_params.py --algo maml-trpo --preset quick
    python experiments/half_cheetah_params.py --algo reptile-ppo --iterations 50 --seed 1
    python experiments/half_cheetah_params.py --algo maml-trpo --preset paper --num-workers 4 \
        --backend processes
    python experiments/half_cheetah_params.py --help      # every run and agent option
"""

from _common import main

FAMILY = "HalfCheetahParams"

if __name__ == "__main__":
    raise SystemExit(main(FAMILY, __doc__ or ""))
