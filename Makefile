# Two commands for a newcomer: `make run` and `make test`. Everything else here serves them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PORT ?= 8000
VENV := .venv
RASA_VENV := .venv-rasa
PY := $(VENV)/bin/python
RASA := $(RASA_VENV)/bin/rasa
RASA_MODEL := var/rasa/models/clinic.tar.gz
FRONTEND := webapp/frontend
CHAT_PAGE := webapp/static/index.html
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := chromium docker-compose build-essential cmake espeak-ng
# Python 3.10 for Rasa 3.6 (it supports 3.8-3.10 only): pyenv's, else one on PATH.
PYTHON310 ?= $(shell (command -v pyenv >/dev/null && pyenv prefix 3.10 2>/dev/null | head -1 | sed 's|$$|/bin/python3.10|') || command -v python3.10)
PYTHON311 ?= $(shell (command -v pyenv >/dev/null && pyenv prefix 3.11 2>/dev/null | head -1 | sed 's|$$|/bin/python3.11|') || command -v python3.11)

.PHONY: help run test lint lint-rules typecheck pytest bench-web bench-sms bench-escalation bench-voice bench-load bench-train train-data train-lora bench-safety bench-rag eval-nlu eval-safety eval-rag kb-index frontend-test train-clinical deps system-packages frontend train-rasa clean

help:
	@echo "make run    install everything, train what needs training, start the platform"
	@echo "make test   install test dependencies and run the whole suite"
	@echo "make bench-web   web channel benchmark (see docs/BENCHMARKS.md)"
	@echo "make bench-sms   SMS webhook acknowledgement and end-to-end latency (needs Redis)"
	@echo "make bench-escalation   patient<->staff latency with 200 open cases (needs Redis)"
	@echo "make bench-voice   phone calls: end of speech to first bot audio, concurrent calls"
	@echo "make bench-load   1,000 web sessions + SMS on PostgreSQL/Redis, 1 vs 2 workers (~10 min)"
	@echo "make eval-nlu    NLU cross-validation (see docs/EVALUATION.md)"
	@echo "make eval-safety safety and triage figures on the case sets (see docs/EVALUATION.md)"
	@echo "make bench-safety   time the safety layer adds per message (see docs/BENCHMARKS.md)"
	@echo "make lint-rules  check the clinical rule files (bot/clinical/rules/)"
	@echo "make eval-rag    knowledge-base retrieval and answer-or-decline figures (docs/EVALUATION.md)"
	@echo "make bench-rag   knowledge-base ingestion and retrieval speed (docs/BENCHMARKS.md)"
	@echo "make kb-index    ingest kb/ into the app's knowledge index (make run does this)"
	@echo "make train-clinical   retrain the clinical second reader (bot/clinical/model/)"
	@echo "make train-data   fine-tuning data: curated dialogues (+ consenting patients' staff corrections)"
	@echo "make train-lora   LoRA fine-tuning: BASE_MODEL=path [ZERO=2] [GPUS=n] (training/WIP.md)"
	@echo "make bench-train  GPU: fine-tuning tokens/s and peak memory under DeepSpeed"

run: deps $(RASA_MODEL) $(CHAT_PAGE) kb-index
	@PORT=$(PORT) $(PY) scripts/run_platform.py

test: deps $(RASA_MODEL) $(CHAT_PAGE) lint lint-rules typecheck frontend-test pytest

pytest: deps $(RASA_MODEL) $(CHAT_PAGE)
	$(PY) -m pytest -ra $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lint-rules: $(VENV)/.installed
	$(PY) -m bot.clinical.lint

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

bench-web: deps $(RASA_MODEL) $(CHAT_PAGE)
	$(PY) scripts/bench_web.py $(BENCH_ARGS)

bench-sms: deps $(RASA_MODEL)
	$(PY) scripts/bench_sms.py $(BENCH_ARGS)

bench-escalation: deps
	$(PY) scripts/bench_escalation.py --record $(BENCH_ARGS)

bench-voice: deps $(RASA_MODEL)
	$(PY) scripts/bench_voice.py --record $(BENCH_ARGS)

# Needs PostgreSQL running (127.0.0.1:5432, user postgres) and redis-server installed (the
# bench starts its own).
bench-load: deps $(RASA_MODEL)
	$(PY) scripts/bench_load.py --record $(BENCH_ARGS)

# The starter knowledge base (kb/) into the app's index; unchanged files are skipped.
kb-index: $(VENV)/.installed
	@echo ">> knowledge base: ingesting kb/ (unchanged files are skipped)"
	$(PY) -m rag ingest kb

eval-rag: $(VENV)/.installed
	$(PY) scripts/eval_rag.py --record $(EVAL_ARGS)

bench-rag: $(VENV)/.installed
	$(PY) scripts/bench_rag.py --record $(BENCH_ARGS)

frontend-test: $(FRONTEND)/node_modules/.installed
	cd $(FRONTEND) && npx vitest run

bench-safety: $(VENV)/.installed
	$(PY) scripts/bench_safety.py $(BENCH_ARGS)

# The second reader's weights are committed; retrain after changing rules or case sets.
train-clinical: $(VENV)/.installed
	$(PY) scripts/train_clinical_classifier.py

# Fine-tuning the local model (training/; work in progress, see training/WIP.md). The database
# source is read only with a file of consenting patients' ids (CONSENT_FILE).
train-data: $(VENV)/.installed
	$(PY) -m training.datasets var/training/data $(if $(CONSENT_FILE),--database-url $(DATABASE_URL) --consent-file $(CONSENT_FILE))

train-lora: train-data
	@test -n "$(BASE_MODEL)" || { echo "!! set BASE_MODEL to a local model folder, e.g. make train-lora BASE_MODEL=/models/qwen2.5-0.5b-instruct"; exit 1; }
	$(PY) -m training.launch --zero $(or $(ZERO),2) $(if $(GPUS),--gpus $(GPUS)) -- \
	  --base-model $(BASE_MODEL) --data var/training/data --output var/training/runs/$(or $(RUN),latest) --bf16

bench-train: $(VENV)/.installed
	$(PY) -m training.bench --zero $(or $(ZERO),2) $(if $(GPUS),--gpus $(GPUS))

eval-safety: $(VENV)/.installed
	$(PY) scripts/eval_safety.py --record $(EVAL_ARGS)

eval-nlu: $(VENV)/.installed $(RASA_VENV)/.installed
	$(PY) scripts/eval_nlu.py $(EVAL_ARGS)

deps: system-packages $(VENV)/.installed $(RASA_VENV)/.installed

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if ! command -v node >/dev/null || ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=19)?0:1)'; then missing="$$missing nodejs npm"; fi; \
	if [ -n "$$missing" ]; then \
	  echo ">> installing system packages:$$missing"; \
	  $(SUDO) apt-get -o DPkg::Lock::Timeout=600 update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get -o DPkg::Lock::Timeout=600 install -y -q $$missing \
	  || { echo "!! could not install$$missing: install them with your package manager and retry"; exit 1; }; \
	fi

$(VENV)/.installed: pyproject.toml requirements/platform.lock
	@test -n "$(PYTHON311)" || { echo "!! Python 3.11 not found: install it (e.g. 'pyenv install 3.11') and retry"; exit 1; }
	@echo ">> platform environment (Python 3.11) in $(VENV): the first time, llama-cpp-python compiles llama.cpp (10-20 minutes on 2 cores)"
	@test -x $(PY) || $(PYTHON311) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install --progress-bar on -c requirements/platform.lock -e '.[dev]'
	@touch $@

$(RASA_VENV)/.installed: requirements/rasa.lock
	@test -n "$(PYTHON310)" || { echo "!! Python 3.10 not found (Rasa 3.6 needs 3.8-3.10): 'pyenv install 3.10' and retry"; exit 1; }
	@echo ">> Rasa environment (Python 3.10, rasa 3.6) in $(RASA_VENV): about 2 minutes the first time"
	@test -x $(RASA_VENV)/bin/python || $(PYTHON310) -m venv $(RASA_VENV)
	$(RASA_VENV)/bin/python -m pip install -q --upgrade pip
	$(RASA_VENV)/bin/python -m pip install --progress-bar on -r requirements/rasa.lock
	@touch $@

# Retrained only when the Rasa project's files change (make compares their dates).
$(RASA_MODEL): $(RASA_VENV)/.installed bot/config.yml bot/domain.yml $(wildcard bot/data/*.yml)
	@echo ">> training the Rasa model (about a minute)"
	@mkdir -p $(dir $@)
	RASA_CACHE_DIRECTORY=var/rasa/cache RASA_TELEMETRY_ENABLED=false $(RASA) train --config bot/config.yml --domain bot/domain.yml --data bot/data \
	  --out $(dir $@) --fixed-model-name clinic
	@touch $@

train-rasa: $(RASA_MODEL)

$(FRONTEND)/node_modules/.installed: $(FRONTEND)/package.json $(FRONTEND)/package-lock.json
	@echo ">> front-end packages (npm ci)"
	cd $(FRONTEND) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(CHAT_PAGE): $(FRONTEND)/node_modules/.installed $(shell find $(FRONTEND)/src $(FRONTEND)/index.html $(FRONTEND)/console.html $(FRONTEND)/vite.config.ts -type f 2>/dev/null)
	@echo ">> building the chat page"
	cd $(FRONTEND) && npm run --silent build
	@touch $@

frontend: $(CHAT_PAGE)

clean:
	rm -rf var webapp/static $(FRONTEND)/node_modules .pytest_cache .mypy_cache .ruff_cache
