"""Meta-World ML1: one manipulation env, 50 training and 50 held-out goals (``metarl[metaworld]``).

``--env ML1-<env>`` picks the env (default ``ML1-reach-v3``; also ``ML1-push-v3``,
``ML1-pick-place-v3``, ...; ``metarl list``). Episodes are Meta-World's 500 steps; the success
rate before and after adaptation is logged (``meta/success_pre_adapt``,
``meta/success_post_adapt``) and ``metarl eval RUN`` reports it per adaptation step. Envs are
stepped through ``env.step``, 20 per worker at most (one is about 20 MiB): use
``--backend processes --num-workers N`` to sample on N cores.

Usage::

    pip install 'metarl[metaworld]'
    python experiments/metaworld_ml1.py --algo maml-trpo --preset quick
    python experiments/metaworld_ml1.py --env ML1-push-v3 --algo maml-trpo --preset default \
        --backend processes --num-workers 2
    python experiments/metaworld_ml1.py --algo rl2-ppo --iterations 100
    python experiments/metaworld_ml1.py --help      # every run and agent option
"""

import argparse

from _common import main

FAMILY = "ML1-reach-v3"

if __name__ == "__main__":
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--env", default=FAMILY)
    env = pre.parse_known_args()[0].env
    raise SystemExit(main(env if env.startswith("ML1-") else FAMILY, __doc__ or ""))
