# energy-pipeline: one entry point for developers and CI.
#   make test   install everything needed (venv, apt packages, Kafka jars) and run all tests
#   make lint   ruff
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The venv is brought up to date whenever the pinned dependencies change; the demo's stamp
# stands for the smaller install `make demo` needs (no test tools).
DEPS_HASH := $(shell cat pyproject.toml harness/pyproject.toml | sha1sum | cut -c1-12)
VENV_STAMP := $(VENV)/.installed-$(DEPS_HASH)
DEMO_STAMP := $(VENV)/.installed-demo-$(DEPS_HASH)
# The runtime distribution (what the image holds) and the harness beside it (local services,
# demo, benchmarks, generators): every make target that installs extras installs both.
# -qq: pip prints errors only. -q still printed setuptools' build warnings, about 65 lines
# per install (pip relays a build backend's warnings at warning level); a failed install
# still shows its error and the build's output.
PIP_INSTALL := $(BIN)/pip install -qq --disable-pip-version-check
# The slowest tests at the end of every run: where the time of `make test` goes.
PYTEST_ARGS ?= --durations=30 --durations-min=20

.PHONY: help venv demo-venv stack-deps deps lint generate test unit integration cluster container e2e node stack demo bench bench-openstef up down clean

help:
	@echo "make demo         the whole pipeline on this machine, live view, demo-out/forecast.png (DURATION=180: stop after 180 s)"
	@echo "make test         install what is missing, then run every test (unit, integration, cluster, container, e2e, node)"
	@echo "make unit|integration|cluster|container|e2e|node   one kind of test only"
	@echo "make image        build the container images (a Docker engine is started if none runs)"
	@echo "make lint         ruff"
	@echo "make generate     rewrite every generated file (CRD, RBAC, README tables, gRPC stubs, dashboards)"
	@echo "make stack        real Kafka (3 nodes), PostgreSQL and MQTT on 127.0.0.1 until Ctrl-C"
	@echo "make bench        benchmarks of this machine, written to bench/"
	@echo "make bench-openstef  forecast comparison with OpenSTEF (own Python 3.12 venv), bench/forecast-compare.{json,md}"
	@echo "make up / down    the platform on a kind cluster (needs docker, kind, kubectl, helm)"
	@echo "make clean        remove the venv (caches in ~/.cache/energy-pipeline are kept)"

$(VENV_STAMP): pyproject.toml harness/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -e '.[dev]' -e ./harness
	touch $@ $(DEMO_STAMP)

# What `make demo` runs on: the runtime with matplotlib, and the harness (the dev install
# above includes it, so a venv made for tests needs nothing more).
$(DEMO_STAMP): pyproject.toml harness/pyproject.toml
	test -f $(VENV_STAMP) || { test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	  $(PIP_INSTALL) --upgrade pip && $(PIP_INSTALL) -e '.[demo]' -e ./harness; }
	touch $@

venv: $(VENV_STAMP)

demo-venv: $(DEMO_STAMP)

# apt packages (postgresql, mosquitto, Java 17, Maven) when missing, and the Kafka and
# HiveMQ jars: what the local stack and the demo run on (cached).
stack-deps: venv
	$(BIN)/energy-pipeline stack install

# ... and for the tests the Kubernetes control plane, kwok and helm built from the Go module
# proxy, and the real node's programs (all cached).
deps: stack-deps
	$(BIN)/energy-pipeline kube install

lint: venv
	$(BIN)/ruff check .

# Every generated file from its source; `make unit` fails while one is stale.
generate: venv
	$(BIN)/python -m energy_harness.generate

test: deps lint
	$(BIN)/pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

integration cluster container e2e node: deps
	$(BIN)/pytest -m $@ $(PYTEST_ARGS)

stack: stack-deps
	$(BIN)/energy-pipeline stack up

# The whole pipeline on this machine; DURATION=<seconds> stops it by itself, FAST=1 for CI.
# It installs what it runs on itself (Debian packages, Kafka and HiveMQ jars), nothing for
# Kubernetes.
demo: demo-venv
	$(BIN)/energy-pipeline demo $(if $(DURATION),--duration $(DURATION)) $(if $(FAST),--fast)

# Speed and quality figures of this machine; not timed tests. Writes bench/.
bench: deps
	$(PIP_INSTALL) -e '.[dev,bench]' -e ./harness
	$(BIN)/python -m energy_harness.bench.dataplane --out bench/results.json
	$(BIN)/python -m energy_harness.bench.peers --out bench/peers.json
	$(BIN)/python -m energy_harness.bench.forecast --out bench/forecast.json
	$(BIN)/python -m energy_harness.bench.serving --out bench/serving.json
	$(BIN)/python -m energy_harness.bench.worker_rss --out bench/worker_rss.json
	$(BIN)/python -m energy_harness.bench.node_platform --out bench/node_platform.json
	$(MAKE) bench-openstef

# Ours vs OpenSTEF (in its own Python 3.12 venv under ~/.cache/energy-pipeline, never a
# product dependency), naive and seed, with and without weather forecasts; after serving,
# whose training and RPC figures it copies.
bench-openstef: deps
	$(PIP_INSTALL) -e '.[dev,bench]' -e ./harness
	$(BIN)/python -m energy_harness.bench.compare --out bench/forecast-compare.json --md bench/forecast-compare.md

# Every image the platform needs; bases are made from Debian packages where no registry answers.
image: venv
	$(BIN)/energy-pipeline image build

# kind cluster + ingress-nginx + image + energy-platform chart; needs docker, kind, kubectl, helm.
up:
	deploy/up.sh

down:
	deploy/down.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
