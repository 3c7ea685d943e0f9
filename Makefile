# Two quick-start targets: `make demo` and `make test`. Everything else is a building block.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
AGENTS ?= 3
DEMO_STATE ?= .demo
PYTEST_ARGS ?=
SECONDS ?= 600

.PHONY: venv system-deps demo demo-local test lint test-unit test-integration sim wheelhouse bench clean role-readmes

# Both distributions, editable: the runtime (what fleet hosts install) and solverfleet-dev (dev/:
# the lab, the local stack and the demos, which add `solverfleet lab` and `solverfleet local`).
$(STAMP): pyproject.toml dev/pyproject.toml constraints.txt requirements-ansible.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt -e '.[dev]' -e ./dev
	$(PIP) install -c constraints.txt -r requirements-ansible.txt
	touch $@

venv: $(STAMP)

# Debian packages the suite runs for real (MariaDB, HAProxy); installs only what is missing.
system-deps:
	bash scripts/install-system-deps.sh

# The fleet as an operator meets it: a namespace lab (root) deployed with the playbooks.
demo: venv system-deps wheelhouse
	$(BIN)/solverfleet lab demo --name demo --solvers $(AGENTS)

# The same services as local processes on loopback, no root or Ansible needed.
demo-local: venv
	$(BIN)/solverfleet local --agents $(AGENTS) --state $(DEMO_STATE) --demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PATH=$(CURDIR)/$(BIN):$$PATH ANSIBLE_CONFIG=$(CURDIR)/ansible.cfg $(BIN)/ansible-lint -q --profile production roles/ playbooks/ inventory/ molecule/
	for p in playbooks/*.yml; do \
	  PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ansible-playbook --syntax-check -i inventory/example/hosts.yml "$$p" >/dev/null || exit 1; \
	done

test: venv system-deps lint
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

test-integration: venv system-deps
	$(BIN)/pytest -m integration $(PYTEST_ARGS)

# The fleet simulator (tests/sim) for longer than the suite's 60 s: `make sim SECONDS=3600`.
sim: venv
	$(BIN)/python -m tests.sim --seconds $(SECONDS)

# Role READMEs from each role's meta/argument_specs.yml (tests/unit/test_role_readmes.py checks them).
role-readmes: venv
	$(BIN)/python scripts/role_readmes.py

# The runtime wheel (never solverfleet-dev) and every runtime dependency wheel in one directory,
# for offline host installs.
wheelhouse: venv
	rm -rf wheelhouse
	$(PIP) wheel -c constraints.txt -w wheelhouse .

bench: venv
	bash scripts/install-system-deps.sh wrk
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) wheelhouse $(DEMO_STATE) .pytest_cache .ruff_cache
