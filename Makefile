PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

# Exits 0 when a Redis server at 127.0.0.1:6379 answers PING with PONG.
REDIS_PING := import socket, sys; s = socket.create_connection(("127.0.0.1", 6379), timeout=2); s.sendall(b"PING\r\n"); sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)

.PHONY: $(VENV) test lint type clean distclean

$(VENV): $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip
	$(VPY) -m pip install -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	@if [ -z "$$REDIS_URL" ]; then \
		if ! $(VPY) -c '$(REDIS_PING)' 2>/dev/null; then \
			echo "error: no Redis server answers PING at 127.0.0.1:6379." >&2; \
			echo "Start one (e.g. 'redis-server --port 6379 --save \"\" --appendonly no --daemonize yes')" >&2; \
			echo "or set REDIS_URL to point the tests at another server." >&2; \
			exit 1; \
		fi; \
	fi
	$(VPY) -m pytest $(PYTEST_ARGS)

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
