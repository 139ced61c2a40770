# Shortcuts; every target is also a plain script under scripts/ (make is not needed).
.PHONY: demo test lint dev bench lock

demo:            ## back up, verify and restore-test the example datasets on the embedded default
	bash scripts/demo.sh

test:            ## the whole test suite (installs and starts what it needs)
	bash scripts/test.sh

lint:            ## ruff (lint + format check) and mypy
	bash scripts/setup.sh && .venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

dev:             ## the Dagster UI and daemon on the demo's local instance
	bash scripts/setup.sh && mkdir -p .local/dagster_home && cp dagster.yaml .local/dagster_home/ && \
	DAGSTER_HOME=$(CURDIR)/.local/dagster_home BACKUP_AGE_IDENTITY_FILE=$(CURDIR)/.local/keys/age-identity.txt \
	.venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench:           ## benchmarks against the raw tools
	bash scripts/bench.sh

lock:            ## regenerate constraints.txt after a deliberate dependency change
	bash scripts/lock.sh
