# qd-llm: data → teacher (LLM, writes the teacher-logit cache) → student (quantum, reads only the cache) → report.
#
# Stage outputs are directories named by content-hash keys (`qdllm key`), so an unchanged
# tree makes nothing and a changed input, setting or stage code remakes exactly what
# depends on it. Examples:
#   make demo                         # set up, then data → teacher → student → report on offline defaults
#   make teacher TASK=hiding          # fine-tune the default teacher and write its cache
#   make student TASK=thematic        # quantum (and classical) students from that cache
#   make reproduce DATA_ROOT=../shared/data/qdllm-paper   # the paper's three tasks on the authors' data
#   make pull REMOTE=s3://bucket/qd   # fetch teacher caches computed elsewhere
#   make test                         # set up, then the test suite

SHELL := /bin/bash
.DEFAULT_GOAL := help

# Stage settings. Each one, when set, passes one `qdllm` flag; defaults, help and validation live only in
# pipeline/config.py (`qdllm data --help`, `qdllm teacher --help`, `qdllm student --help`), so unset means the
# declared default.
TASK          ?=
DATA          ?=
TEXT_COLUMN   ?=
LABEL_COLUMN  ?=
MAX_PER_CLASS ?=
SEED          ?=
MODEL         ?=
QUANTIZE      ?=
EMBEDDER      ?=
TRANSFER      ?=
PROFILE       ?=
STUDENT_MODEL ?=
VARIANT       ?=
QUBITS        ?=
LAYERS        ?=
INPUT_SCALING ?=
LOSS          ?=
ALPHA         ?=
TEMPERATURE   ?=
LR            ?=
EPOCHS        ?=
BATCH_SIZE    ?=
SEEDS         ?=
READOUT       ?=
SCHEDULE      ?=
WARMUP        ?=
STUDENT_WEIGHT_DECAY ?=
REMOTE        ?=
TEACHER_KEY   ?=
FULL_GRID     ?=
JOBS          ?=
CLUSTER       ?=
DATA_ROOT     ?=
MODELS        ?=
EXPORT_LAYERS ?=
METHOD        ?=
BASELINE_EPOCHS ?=
BASELINE_LR   ?=
BASELINE_MAX_LENGTH ?=
# A user's value is text, never Make code: each variable above keeps the exact text it was given (command line or
# environment), so a `$(shell …)` in it is not run when Make reads it or exports it to a recipe.
USER_VARS := TASK DATA TEXT_COLUMN LABEL_COLUMN MAX_PER_CLASS SEED MODEL QUANTIZE EMBEDDER TRANSFER PROFILE \
             STUDENT_MODEL VARIANT QUBITS LAYERS INPUT_SCALING LOSS ALPHA TEMPERATURE LR EPOCHS BATCH_SIZE SEEDS \
             READOUT SCHEDULE WARMUP STUDENT_WEIGHT_DECAY REMOTE TEACHER_KEY FULL_GRID JOBS CLUSTER DATA_ROOT MODELS \
             METHOD BASELINE_EPOCHS BASELINE_LR BASELINE_MAX_LENGTH EXPORT_LAYERS
define NEWLINE


endef
$(foreach v,$(USER_VARS),$(if $(findstring $(NEWLINE),$(value $(v))),\
  $(error error: $(v) holds a line break; give its value on one line)))
$(foreach v,$(USER_VARS),$(eval override $(v) := $$(value $(v))))

# Where the tools live: `make setup` builds .venv; an environment set up another way overrides these
# (e.g. `make data QDLLM="python -m stages.cli" SETUP=/path/to/a/stamp`).
PYTHON ?= python3
VENV   ?= .venv
QDLLM  ?= $(VENV)/bin/qdllm
PY     ?= $(VENV)/bin/python
SETUP  ?= $(VENV)/.setup-done
SUBMAKE := $(MAKE) --no-print-directory

# A user's value reaches the shell as one single-quoted word: `$(value)` keeps make from expanding it (a `$(shell …)`
# in a value stays text), and each ' becomes '\'' so no quote can end the word early. `flag` gives "--opt 'value'".
quote = '$(subst ','\'',$(value $(1)))'
flag = $(if $(value $(1)),$(2) $(call quote,$(1)))
DATA_ARGS    = $(call flag,TASK,--task) $(call flag,DATA,--source) $(call flag,TEXT_COLUMN,--text-column) \
               $(call flag,LABEL_COLUMN,--label-column) $(call flag,MAX_PER_CLASS,--max-per-class) $(call flag,SEED,--seed)
TEACHER_ARGS = $(DATA_ARGS) $(call flag,MODEL,--model) $(call flag,QUANTIZE,--quantize) \
               $(call flag,EMBEDDER,--embedder) $(call flag,PROFILE,--profile) $(call flag,TRANSFER,--transfer) \
               $(call flag,EXPORT_LAYERS,--export-layers)
STUDENT_ARGS = $(call flag,STUDENT_MODEL,--student-model) $(call flag,VARIANT,--variant) $(call flag,QUBITS,--qubits) \
               $(call flag,LAYERS,--layers) $(call flag,INPUT_SCALING,--input-scaling) $(call flag,LOSS,--loss) \
               $(call flag,ALPHA,--alpha) $(call flag,TEMPERATURE,--temperature) $(call flag,LR,--lr) \
               $(call flag,EPOCHS,--epochs) $(call flag,BATCH_SIZE,--batch-size) $(call flag,SEEDS,--seeds) \
               $(call flag,READOUT,--readout) $(call flag,SCHEDULE,--schedule) $(call flag,WARMUP,--warmup) \
               $(call flag,STUDENT_WEIGHT_DECAY,--student-weight-decay)
# `make baselines`: the transformer baselines' own budget (a transformer fine-tune, not the student's lr and epochs)
BASELINE_ARGS = $(call flag,METHOD,--method) $(call flag,BASELINE_EPOCHS,--epochs) $(call flag,BASELINE_LR,--lr) \
                $(call flag,BASELINE_MAX_LENGTH,--max-length) $(call flag,SEEDS,--seeds)
REMOTE_ARG   = $(call flag,REMOTE,--remote)
# TASK restricts `make student` only when given; otherwise every teacher cache present is used.
STUDENT_SEL  = $(if $(value TEACHER_KEY),$(call flag,TEACHER_KEY,--teacher-key),$(call flag,TASK,--task))

.PHONY: help setup data teacher student baselines ablations report status reproduce demo push pull test test-slow bench clean

help:
	@sed -n '1,11p' Makefile | sed 's/^# \{0,1\}//'
	@echo "Variables (unset = the default in pipeline/config.py): TASK DATA TEXT_COLUMN LABEL_COLUMN MAX_PER_CLASS SEED"
	@echo "  MODEL QUANTIZE EMBEDDER PROFILE TRANSFER EXPORT_LAYERS (teacher states for pkd) REMOTE TEACHER_KEY FULL_GRID JOBS (default: every core)"
	@echo "  CLUSTER (student units on a Dask cluster: tcp://HOST:8786, a scheduler file, or local; docs/scaling.md)"
	@echo "  student: STUDENT_MODEL VARIANT QUBITS LAYERS INPUT_SCALING LOSS ALPHA TEMPERATURE LR EPOCHS BATCH_SIZE SEEDS"
	@echo "  baselines: METHOD (tinybert,distilbert,minillm,pkd) BASELINE_EPOCHS BASELINE_LR BASELINE_MAX_LENGTH SEEDS"

# ---------------------------------------------------------------- set-up
setup: $(SETUP)

$(SETUP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel
	$(PY) -m pip install --quiet -e '.[teacher,student,dev]'
	@# mindquantum pins rich==10.9.0, which typer rejects; its real needs come from the `student` extra.
	$(PY) -m pip install --quiet --no-deps mindquantum==0.12.0
	$(PY) -c "import numpy, mindspore, mindquantum, torch, transformers, peft; print('set-up OK: numpy', numpy.__version__, 'mindspore', mindspore.__version__, 'torch', torch.__version__)"
	touch $@

# ---------------------------------------------------------------- stages
# Public targets make sure the venv exists, then run a sub-make that computes the keys.
data teacher demo: $(SETUP)
	@$(SUBMAKE) _$@

student: $(SETUP)
	$(QDLLM) student $(STUDENT_SEL) $(STUDENT_ARGS) $(REMOTE_ARG) $(call flag,JOBS,--jobs) $(call flag,CLUSTER,--cluster)

# transformer compression baselines (TinyBERT-, DistilBERT-, MiniLLM-style) from the same teacher caches
baselines: $(SETUP)
	$(QDLLM) baselines $(STUDENT_SEL) $(BASELINE_ARGS)

# the ablations vary loss, layers, qubits and temperature one at a time around the settings given
ablations: $(SETUP)
	$(QDLLM) student ablations $(STUDENT_SEL) $(STUDENT_ARGS) $(REMOTE_ARG) $(call flag,JOBS,--jobs) \
	  $(call flag,CLUSTER,--cluster) \
	  $(if $(value FULL_GRID),--full-grid)

# Whether each stage's output is current under these settings and, if not, what changed since its last build.
status: $(SETUP)
	@$(QDLLM) status $(TEACHER_ARGS) $(STUDENT_ARGS)

report: $(SETUP)
	$(QDLLM) report

# The paper's three tasks from the authors' files: teacher per task (per model in MODELS), students, ablations,
# the transformer baselines, report. MODELS="smollm2-135m gemma3-270m qwen2.5-coder-0.5b qwen2.5-coder-1.5b" builds
# the offline teacher ladder (Table 8 on a CPU); with a GPU, MODELS="bloomz-1b1 bloomz-3b opt-6.7b llama2-7b llama3-8b"
# builds the paper's.
REPRO_TASKS := emotion:senti hiding:stega thematic:topic
reproduce: $(SETUP)
	@root=$(call quote,DATA_ROOT); models=$(call quote,MODELS); set -ef; \
	  test -n "$$root" || { echo "error: give the authors' data, e.g. make reproduce DATA_ROOT=../shared/data/qdllm-paper" >&2; exit 2; }; \
	  for pair in $(REPRO_TASKS); do task=$${pair%%:*}; dir="$$root/$${pair##*:}"; \
	  test -d "$$dir" || { echo "error: $$dir is missing; DATA_ROOT must hold senti/, stega/ and topic/" >&2; exit 2; }; \
	  for model in $${models:-_default}; do \
	    if [ "$$model" = _default ]; then $(SUBMAKE) teacher TASK="$$task" DATA="$$dir"; \
	    else $(SUBMAKE) teacher TASK="$$task" DATA="$$dir" MODEL="$$model"; fi; \
	  done; \
	  $(SUBMAKE) student TASK="$$task"; $(SUBMAKE) ablations TASK="$$task"; $(SUBMAKE) baselines TASK="$$task"; \
	done
	$(QDLLM) report

push pull: $(SETUP)
	@test -n $(call quote,REMOTE) || { echo "error: give a remote, e.g. make $@ REMOTE=s3://bucket/prefix or REMOTE=/mnt/shared/qdllm" >&2; exit 2; }
	$(QDLLM) cache $@ $(REMOTE_ARG)

ifneq ($(filter _%,$(MAKECMDGOALS)),)
KEYS := $(shell $(QDLLM) -q key all $(TEACHER_ARGS) --make || echo KEYS_FAILED)
ifneq ($(filter KEYS_FAILED,$(KEYS)),)
$(error could not compute the stage keys; see the message above)
endif
$(foreach kv,$(KEYS),$(eval $(kv)))

.PHONY: _data _teacher _demo
_data: $(DATA_DIR)/manifest.json
_teacher: $(TEACHER_DIR)/manifest.json

$(DATA_DIR)/manifest.json:
	$(QDLLM) data $(DATA_ARGS)

$(TEACHER_DIR)/manifest.json: $(DATA_DIR)/manifest.json
	$(QDLLM) teacher $(TEACHER_ARGS) $(REMOTE_ARG)

_demo: $(TEACHER_DIR)/manifest.json
	$(QDLLM) student $(call flag,TEACHER_KEY,--teacher-key) $(STUDENT_ARGS) $(call flag,JOBS,--jobs)
	$(QDLLM) report
endif  # the key-named targets exist only in the sub-make that computed the keys

# ---------------------------------------------------------------- checks
test: $(SETUP)
	$(PY) -m pytest -q

test-slow: $(SETUP)
	$(PY) -m pytest -q -m slow

bench: $(SETUP)
	@for b in $(filter-out tests/bench/gpu_check.py,$(wildcard tests/bench/*.py)); do echo "== $$b"; $(PY) $$b || exit 1; done

# the teacher's GPU paths (bf16, 4-bit QLoRA, the gpu profile, accelerate launch on every GPU) in one table; without
# CUDA it says so and does nothing (tests/bench/gpu_check.py, docs/teacher.md)
.PHONY: gpu-check
gpu-check: $(SETUP)
	$(PY) tests/bench/gpu_check.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
