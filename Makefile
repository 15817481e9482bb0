# Thin wrappers over the `weight-tuner` CLI. `make test` and `make tune` set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

STUDY   ?= default
STORAGE ?= sqlite:///studies/$(STUDY).db
TRIALS  ?= 16
DATA    ?=
CONFIG  ?=
OUT     ?= studies/$(STUDY)-best.json
PORT    ?= 8080
HOST    ?= 127.0.0.1
BENCH_DATA ?= ../shared/skol-corpus
BENCH_STUDY ?=

DATA_ARG   := $(if $(DATA),--data $(DATA),)
CONFIG_ARG := $(if $(CONFIG),--config $(CONFIG),)

.PHONY: install test tune export report dashboard bench corpus clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

tune: $(STAMP)
	$(BIN)/weight-tuner tune $(DATA_ARG) $(CONFIG_ARG) --study $(STUDY) --storage $(STORAGE) --trials $(TRIALS)

export: $(STAMP)
	$(BIN)/weight-tuner export --study $(STUDY) --storage $(STORAGE) -o $(OUT)

report: $(STAMP)
	$(BIN)/weight-tuner report --study $(STUDY) --storage $(STORAGE)

dashboard: $(STAMP)
	$(BIN)/weight-tuner dashboard --storage $(STORAGE) --host $(HOST) --port $(PORT)

corpus: $(STAMP)
	$(BIN)/weight-tuner corpus $(DATA_ARG)

bench: $(STAMP)
	$(BIN)/weight-tuner bench --data $(BENCH_DATA) $(if $(BENCH_STUDY),--study $(BENCH_STUDY) --storage sqlite:///studies/$(BENCH_STUDY).db,)

clean:
	rm -rf $(VENV) studies/cache runs .pytest_cache
