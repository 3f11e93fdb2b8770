"""HopperParams: Hopper with randomized dynamics (PEARL's hopper-rand-params).

No published setting for these agents: the public originals need MuJoCo 1.31 and PEARL
shows curves only. ``--preset paper`` applies the MAML paper's general hyperparameters
(meta-batch 40, 20 episodes per task, (100, 100) ReLU, 500 iterations).

Usage::

    python experiments/hopper_params.py --algo maml-trpo --preset quick
    python experiments/hopper_params.py --algo reptile-ppo --iterations 50 --seed 1
    python experiments/hopper_params.py --algo maml-trpo --preset paper --num-workers 4 \
        --backend processes
    python experiments/hopper_params.py --help      # every run and agent option
"""

from _common import main

FAMILY = "HopperParams"

if __name__ == "__main__":
    raise SystemExit(main(FAMILY, __doc__ or ""))
