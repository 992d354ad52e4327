# newsmtl developer entry points.
#
#   make demo             create the venv, install everything, run `newsmtl demo`
#   make test             create the venv, install everything and the Debian packages the suite
#                         needs, then ruff, mypy and the whole pytest suite (real Kafka and Redis
#                         are started by the test fixtures themselves)
#   make services-start   start the local Kafka broker and Redis (deploy/local/services.sh)
#   make services-stop    stop them
#
# Variables: VENV (default .venv; point it at a persistent directory to reuse one venv, and its
# multi-GB torch, across checkouts and CI runs), PYTHON (default python3), EXTRAS (default
# serve,train,faust,dev), PYTEST_ARGS (extra pytest arguments). pip keeps its download cache
# (~/.cache/pip) on purpose: torch from PyPI is the large CUDA build.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= serve,train,faust,dev
PYTEST_ARGS ?=

BIN := $(VENV)/bin
# The stamp says "this checkout, with these extras, is installed in this venv"; it is redone when
# pyproject.toml changes. Its name carries the checkout path, so that a shared venv never keeps an
# editable install that points at another checkout.
STAMP_ID := $(shell printf '%s|%s' '$(CURDIR)' '$(EXTRAS)' | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.newsmtl-installed-$(STAMP_ID)

SERVICES := bash deploy/local/services.sh

.PHONY: help demo test install system-deps lint typecheck pytest services-start services-stop services-status services-clean

help:
	@sed -n '1,14p' $(firstword $(MAKEFILE_LIST)) | sed 's/^# \{0,1\}//'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	rm -f $(VENV)/.newsmtl-installed-*
	$(BIN)/python -m pip install -e '.[$(EXTRAS)]'
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/newsmtl demo

# Debian packages the suite needs; apt-get runs only when one is missing. Java and Maven fetch
# and run the real Kafka broker; redis-server is the real Redis.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null && command -v redis-cli >/dev/null || missing="$$missing redis-server"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; \
	  elif command -v sudo >/dev/null; then sudo="sudo -n"; \
	  else echo "make: missing Debian packages:$$missing; install them as root" >&2; exit 1; fi; \
	  echo "installing Debian packages:$$missing"; \
	  $$sudo apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

lint: install
	$(BIN)/ruff check src tests bench

typecheck: install
	$(BIN)/mypy

# pytest exits 5 when it collected nothing: that is a failure here, never a green run.
pytest: install system-deps
	@rc=0; $(BIN)/python -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

test: install system-deps
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory typecheck
	$(MAKE) --no-print-directory pytest

services-start: system-deps
	$(SERVICES) start

services-stop:
	$(SERVICES) stop

services-status:
	$(SERVICES) status

services-clean:
	$(SERVICES) clean
