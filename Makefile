# Shortcuts; every target is also a plain script under scripts/ (make is not needed).
.PHONY: demo test lint dev bench lock

demo:            ## back up, verify and restore-test the example datasets on the embedded default
	bash scripts/demo.sh

test:            ## the whole test suite (installs and starts what it needs)
	bash scripts/test.sh

lint:            ## ruff (lint + format check) and mypy
	bash scripts/setup.sh && .venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

dev:             ## the Dagster UI and daemon on the demo's local instance (secrets and DAGSTER_HOME from .env)
	@test -f .env || { echo "no .env: run 'bash scripts/demo.sh --keep' first (it writes .env)"; exit 1; }
	bash scripts/setup.sh && .venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench:           ## benchmarks against the raw tools
	bash scripts/bench.sh

lock:            ## regenerate constraints.txt after a deliberate dependency change
	bash scripts/lock.sh
