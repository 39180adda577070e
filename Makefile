# AgencyStack pgvector component. Targets only pass variables to the CLI (agency-pgvector);
# values travel in the environment, never spliced into a shell command line.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
CLI := "$$VENV/bin/agency-pgvector"

CLIENT_ID ?= default
ENGINE ?= auto
AGENCY_STACK_ROOT ?= /opt/agency_stack
AGENCY_STACK_LOG ?= /var/log/agency_stack/components/pgvector.log

# What the recipes read from their environment: the CLI's variables, and PYTHON and VENV for the venv.
VARS := CLIENT_ID DOMAIN ADMIN_EMAIL FORCE WITH_DEPS ENABLE_CLOUD VERBOSE ENGINE ADMIN_URL PORT DRY_RUN \
        JSON QUIET ALL LINES FOLLOW YES NO_BACKUP KEEP_DATA REMOVE_SERVER FILE TARGET_CLIENT SAMPLES \
        PGVECTOR_IMAGE PGVECTOR_PORT_RANGE SERVER POOL_MODE POOL_SIZE POOL_MAX_CONNECTIONS POOLER \
        AGENCY_STACK_ROOT AGENCY_STACK_LOG PYTHON VENV

# make would expand a value from its command line or the environment wherever the value is used, and
# exports every command-line variable to the recipes, expanded. So each one is made literal here
# (override VAR := $(value VAR)): $(shell ...), $(eval ...) and $$ reach the CLI as text, which it refuses;
# a simply-expanded variable is exported as it is. `VAR:=...` and `VAR!=...` on the command line are
# expanded before this file is read, and MAKEFLAGS is make's own: a script passing a client's input
# writes VAR=value, or better, sets VAR in the environment.
literal = $(eval override $1 := $$(value $1))
$(foreach var,$(VARS) PYTEST_ARGS BENCH_ARGS,$(if $(filter environment,$(firstword $(origin $(var)))),$(call literal,$(var))))
$(foreach var,$(.VARIABLES),$(if $(filter command,$(firstword $(origin $(var)))),$(call literal,$(var))$(eval export $(var))))

export $(VARS)

.DEFAULT_GOAL := help
.PHONY: help pgvector pgvector-status pgvector-logs pgvector-restart pgvector-test pgvector-uninstall \
        pgvector-backup pgvector-restore pgvector-rotate pgvector-upgrade lint test bench \
        pgvector-list pgvector-suspend pgvector-resume pgvector-remove-shared-server

help: ## Show the targets and the variables they take
	@echo "make pgvector DOMAIN=example.com ADMIN_EMAIL=ops@example.com CLIENT_ID=acme WITH_DEPS=true"
	@echo
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 22
	@echo
	@echo "Variables: CLIENT_ID (default: default) DOMAIN ADMIN_EMAIL ENGINE=auto|embedded|external|docker"
	@echo "  ADMIN_URL (external) PORT FORCE WITH_DEPS ENABLE_CLOUD VERBOSE DRY_RUN JSON QUIET (true to switch on)"
	@echo "  POOL_MODE=session|transaction POOL_SIZE POOL_MAX_CONNECTIONS (the client's PgBouncer pool); POOLER=true (logs)"
	@echo "  AGENCY_STACK_ROOT=$$AGENCY_STACK_ROOT AGENCY_STACK_LOG=$$AGENCY_STACK_LOG"
	@echo "Details: docs/operator.md, docs/runbook.md; every command: $$VENV/bin/agency-pgvector --help"

$(VENV)/.installed: pyproject.toml
	@"$$PYTHON" -m venv "$$VENV" 2>/dev/null || { \
	  if [ "$$WITH_DEPS" = true ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && "$$PYTHON" -m venv "$$VENV"; \
	  else echo "error: '$$PYTHON -m venv' failed: install python3-venv (or re-run with WITH_DEPS=true)." >&2; exit 1; fi; }
	@"$$VENV/bin/pip" install -q --disable-pip-version-check -e . || { echo "error: installing the CLI into $$VENV failed (see pip's message above)." >&2; exit 1; }
	@"$$VENV/bin/python" -m compileall -q installer/agency_pgvector >/dev/null  # an editable install compiles nothing: every run would (PYTHONDONTWRITEBYTECODE hosts)
	@touch "$$VENV/.installed"

$(VENV)/.installed-test: $(VENV)/.installed $(VENV)/.installed-samples
	@"$$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test]'
	@touch "$$VENV/.installed-test"

# The samples' own dependencies. torch is pinned first: 2.13.0 is the CPU build this host offers; any
# other torch spec downloads several GB of CUDA wheels.
$(VENV)/.installed-samples: $(VENV)/.installed samples/requirements.txt
	@"$$VENV/bin/pip" install -q --disable-pip-version-check torch==2.13.0
	@"$$VENV/bin/pip" install -q --disable-pip-version-check -r samples/requirements.txt
	@touch "$$VENV/.installed-samples"

pgvector: $(VENV)/.installed ## Install or converge the client (DOMAIN, ADMIN_EMAIL); ALL=true: every installed client
	@$(CLI) install

pgvector-status: $(VENV)/.installed ## Health of the client (ALL=true: every client; JSON=true for scripts)
	@$(CLI) status

pgvector-logs: $(VENV)/.installed ## Server log (LINES=100, FOLLOW=true) and the installer's component log
	@$(CLI) logs

pgvector-restart: $(VENV)/.installed ## Graceful restart, waits until the tenant can log in
	@$(CLI) restart

pgvector-test: $(VENV)/.installed $(if $(filter true,$(SAMPLES)),$(VENV)/.installed-samples) ## End-to-end check with the tenant's own credentials (SAMPLES=true: run samples)
	@$(CLI) test

pgvector-uninstall: $(VENV)/.installed ## Remove the tenant (backup first; KEEP_DATA, NO_BACKUP, REMOVE_SERVER, YES)
	@$(CLI) uninstall

pgvector-suspend: $(VENV)/.installed ## Uninstall KEEP_DATA=true: data kept, no login
	@KEEP_DATA=true $(CLI) uninstall

pgvector-resume: $(VENV)/.installed ## Resume a suspended client (= make pgvector)
	@$(CLI) install

pgvector-list: $(VENV)/.installed ## Every client and its state (JSON=true)
	@$(CLI) list

pgvector-remove-shared-server: $(VENV)/.installed ## Remove the empty shared server (YES)
	@$(CLI) remove-shared-server

pgvector-backup: $(VENV)/.installed ## pg_dump -Fc of the tenant into the client's backups/
	@$(CLI) backup

pgvector-restore: $(VENV)/.installed ## Restore FILE=... into the client (or TARGET_CLIENT=...)
	@$(CLI) restore

pgvector-rotate: $(VENV)/.installed ## New password: role and .env together, old sessions ended
	@$(CLI) rotate

pgvector-upgrade: $(VENV)/.installed ## ALTER EXTENSION vector UPDATE in the client's database(s)
	@$(CLI) upgrade

# The gate make test runs first; both tools read their settings from pyproject.toml.
lint: $(VENV)/.installed-test ## Lint (ruff) and type-check (mypy) the code
	@"$$VENV/bin/ruff" check --quiet .
	@"$$VENV/bin/mypy"

# PYTEST_ARGS and BENCH_ARGS are the developer's own arguments, parsed by the shell on purpose.
test: $(VENV)/.installed-test lint ## Run the lint gate, then the test suite (real PostgreSQL servers; needs root)
	@"$$VENV/bin/python" -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-test ## Run the benchmarks and write docs/benchmarks.md
	@"$$VENV/bin/python" -m bench $(BENCH_ARGS)
