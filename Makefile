# Every target sets up .venv itself (scripts/bootstrap.sh), so each works on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: venv test test-fast test-mujoco33 test-warp lint format demo bench clean

venv:
	@bash scripts/bootstrap.sh

## The whole test suite (what CI runs).
test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

## Everything but the tests marked slow.
test-fast: venv
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

## The MuJoCo-facing tests again on MuJoCo 3.3 (metarl supports 3.3 and 4.x), in .venv-mujoco33,
## with the metaworld extra (Meta-World 3.1 pins mujoco 3.3.0) and the Meta-World tests.
test-mujoco33:
	@VENV=.venv-mujoco33 EXTRAS=dev,metaworld MUJOCO_SPEC="mujoco==3.3.0" bash scripts/bootstrap.sh
	.venv-mujoco33/bin/python -m pytest -m "not slow" tests/envs tests/core tests/sampling/test_sampler.py $(PYTEST_ARGS)
	.venv-mujoco33/bin/python -m pytest tests/metaworld $(PYTEST_ARGS)

## The warp backend's tests on MuJoCo Warp's CPU device, in .venv-warp with the warp extra
## (mujoco-warp needs Python >= 3.11). The first run compiles MuJoCo Warp's kernels (about 35 s;
## cached in ~/.cache/warp afterwards); `gpu`-marked tests run where CUDA exists.
test-warp:
	@VENV=.venv-warp EXTRAS=dev,warp bash scripts/bootstrap.sh
	.venv-warp/bin/python -m pytest tests/warp $(PYTEST_ARGS)

## ruff (lint + format check) and mypy on the library.
lint: venv
	$(PY) -m ruff check metarl envs agents experiments benchmarks tests
	$(PY) -m ruff format --check metarl envs agents experiments benchmarks tests
	$(PY) -m mypy

format: venv
	$(PY) -m ruff format metarl envs agents experiments benchmarks tests
	$(PY) -m ruff check --fix metarl envs agents experiments benchmarks tests

## A short MAML-TRPO run on Point2DNav (a few minutes on 2 CPU cores), its meta-test beside a
## from-scratch PPO baseline, and its adaptation video: runs/demo-..., videos/demo-....mp4.
DEMO_RUN := runs/demo-maml-trpo-Point2DNav-$(shell date +%Y%m%d-%H%M%S)
demo: venv
	$(PY) -m metarl train maml-trpo --env Point2DNav --variant maml-rllab --preset quick --seed 0 --run-dir $(DEMO_RUN)
	$(PY) -m metarl eval $(DEMO_RUN) --protocol quick --step-sizes 0.1 0.05 --baseline-tasks 2
	$(PY) -m metarl render $(DEMO_RUN) --task-index 0 --num-adapt-steps 2 --step-sizes 0.1 0.05 --out videos/$(notdir $(DEMO_RUN)).mp4 --gif

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
