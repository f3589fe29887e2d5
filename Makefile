# annotator: `make demo` and `make test` set themselves up on a fresh machine.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# llama.cpp is compiled for a portable x86-64 AVX2 CPU: a native build picks AMX kernels that crash in sandboxes
# (and on machines other than the build host). --no-cache-dir keeps a wheel built with other flags from being reused.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
LLAMA_CPP_VERSION ?= 0.3.36

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
	@echo "building llama-cpp-python $(LLAMA_CPP_VERSION) (compiles llama.cpp: ~10 min on 2 cores, once)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q --no-cache-dir "llama-cpp-python[server]==$(LLAMA_CPP_VERSION)"
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
	$(BIN)/annotator export $(DEMO_RUN) --out $(DEMO_RUN)/dataset --gold $(DEMO_HUMANS)

student: $(STAMP)
	$(BIN)/annotator train-student $(DEMO_RUN)/dataset --gold $(DEMO_HUMANS) --out $(DEMO_RUN)/student

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python tests/bench_pipeline.py

clean:
	rm -rf runs .pytest_cache
