# Two commands on a fresh machine:  make demo   |   make test
VENV ?= .venv
PY := $(VENV)/bin/python
export RAY_USAGE_STATS_ENABLED ?= 0
export RAY_AUTH_MODE ?= disabled

.PHONY: setup demo test test-cluster test-chaos test-slow bench clean

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/zv-ray demo

# Everything but the slow (overfitting, every tiny experiment) tests and the chaos drills (`make test-chaos`, ~20 min),
# the simulated multi-node cluster included; plain `pytest` skips the cluster test too, `make test-cluster` runs it alone.
test: setup
	bash scripts/setup_browser.sh
	$(PY) -m pytest -q -m "not slow and not chaos"

test-cluster: setup
	$(PY) -m pytest -q -m cluster

test-chaos: setup
	$(PY) -m pytest -q -s -m chaos

test-slow: setup
	$(PY) -m pytest -q -m slow

bench: setup
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf outputs .pytest_cache
