# fleetwire — the commands people expect. `make demo` and `make test` work on a fresh
# machine: they install what is missing and start the services that are not running.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
FW        := $(VENV)/bin/fleetwire
BUF       := node_modules/.bin/buf
MODEL_DIR := .cache/models/tiny-llama

# Nothing may reach a model hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help setup venv services tools browser model demo up test test-fast test-ts pytest proto lint typecheck bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup: venv services tools browser model  ## install everything and start the services

venv:  ## create .venv and install fleetwire with the right vLLM build
	@scripts/ensure-venv.sh

services:  ## install/start RabbitMQ, Redis and PostgreSQL when not running; install Prometheus (tests)
	@scripts/ensure-services.sh

tools: venv  ## install buf (npm) and check grpcurl
	@scripts/ensure-tools.sh

browser:  ## install Debian's Chromium (the console's browser test) when missing
	@scripts/ensure-browser.sh

model: venv  ## build the tiny random-weight model (offline, deterministic)
	@$(FW) make-model --out $(MODEL_DIR)

demo: setup  ## run the whole mesh with two vLLM nodes and print signed results
	@$(FW) demo --nodes 2

up: setup  ## run a local mesh until Ctrl-C
	@$(FW) up --nodes 2

test: setup lint typecheck pytest  ## everything CI runs: lint, types, all tests

pytest:
	@$(PY) -m pytest tests

test-fast: venv services browser  ## unit and integration tests only (no vLLM)
	@$(PY) -m pytest tests/unit tests/integration

test-ts: tools  ## TypeScript client: offline tests; against a mesh too when FLEETWIRE_ADDRESS is set
	@node --import tsx --test clients/typescript/test/signing.test.ts clients/typescript/test/retry.test.ts clients/typescript/test/client.test.ts clients/typescript/test/mesh.test.ts

proto: venv tools  ## regenerate the Python stubs and the TypeScript client code from protos/
	@scripts/gen-proto.sh

lint: venv tools  ## ruff, ruff format, import contracts (layers), buf lint, buf breaking
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/lint-imports
	@$(BUF) lint
	@scripts/buf-breaking.sh

typecheck: venv tools  ## mypy --strict on the hand-written packages, tsc on the TypeScript client
	@$(VENV)/bin/mypy
	@node_modules/.bin/tsc --noEmit -p clients/typescript

bench: venv services model  ## benchmarks: mesh vs raw AMQP, Celery and direct vLLM (a few minutes; not in `make test`)
	@$(PY) -c "import celery, dramatiq, pika, pyinstrument, yappi" 2>/dev/null || $(VENV)/bin/pip install -q -e ".[bench]"
	@$(PY) -m bench.run

clean:  ## remove build caches (keeps .venv and the model)
	rm -rf .mypy_cache .ruff_cache .pytest_cache *.egg-info
