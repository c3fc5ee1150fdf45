# The README's commands. Each one sets up what it needs on a fresh machine: system packages
# through apt-get when missing (as root, or with sudo), Python packages into .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8080
PYTEST_ARGS ?=

# binary -> Debian package that ships it
SYSTEM_PACKAGES := redis-server:redis-server redis-sentinel:redis-sentinel pgbouncer:pgbouncer \
	promtool:prometheus prometheus:prometheus chromium:chromium node:nodejs npm:npm wrk:wrk \
	yq:yq prometheus-alertmanager:prometheus-alertmanager amtool:prometheus-alertmanager
# What only `make bench` needs besides: callgrind counts instructions (bench_instructions.py).
BENCH_PACKAGES := valgrind:valgrind

.PHONY: run test bench soak lint system-deps venv

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	@missing=""; \
	for pair in $(SYSTEM_PACKAGES) $(EXTRA_PACKAGES); do \
	  bin=$${pair%%:*}; pkg=$${pair##*:}; \
	  PATH="$$PATH:/usr/sbin:/sbin" command -v $$bin >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing postgresql"; \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	if [ -n "$${missing// /}" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	  echo "installing system packages:$$missing"; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

run: system-deps $(STAMP)
	$(PY) -m tests.stack --demo --url http://$(HOST):$(PORT) --exec -- $(PY) -m server serve --host $(HOST) --port $(PORT)

test: system-deps $(STAMP)
	$(VENV)/bin/ruff check server web tests bench
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(MAKE) --no-print-directory system-deps EXTRA_PACKAGES="$(BENCH_PACKAGES)"
	$(PY) -m bench

# An hour of mixed load and idle rounds; RSS must stay flat (not in `make test`).
SOAK_ARGS ?=
soak: system-deps $(STAMP)
	$(PY) bench/soak.py $(SOAK_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check server web tests bench
	$(VENV)/bin/ruff format --check server web tests bench
