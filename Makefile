# Two commands do everything from a fresh clone:
#   make demo   -- set up, then reproduce the failures of docs/lessons side by side
#   make test   -- set up, then lint, type-check, build the docs and run the whole test suite
VENV ?= .venv
PYTHON ?= python3
# The pinned test environment (constraints.txt); test-latest and lock use constraints-latest.txt.
CONSTRAINTS ?= constraints.txt
BIN := $(VENV)/bin
# Every pip install below, in tools/ and in the tests goes through the constraints.
export PIP_CONSTRAINT := $(abspath $(CONSTRAINTS))
PIP := $(BIN)/python -m pip install
# The venv first on PATH: the console script, notebook kernels and child processes use it.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo docs test test-fast test-latest lock test-numpyro-versions numpyro-oldest-venv lint setup clean upstream-tests upstream-tests-blackjax

setup: $(VENV)/.installed

# torch goes in first, pinned, so that nothing later resolves a CUDA build.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e ".[all,test,docs]"
	touch $@

demo: setup
	$(BIN)/robusthmc repro truncated-normal

lint: setup
	$(BIN)/ruff check src tests benchmarks tools notebooks
	$(BIN)/ruff format --check src tests benchmarks tools notebooks
	$(BIN)/mypy
	$(BIN)/lint-imports

# The documentation site (docs/_build/html/index.html): API reference, the guard's
# policies, the lessons, the fault matrix, the notebooks with their outputs.
docs: setup
	$(BIN)/sphinx-build -q -W --keep-going -b html docs docs/_build/html

# make test's jobs, run on two workers (the machine has two cores), each taking the next
# job as soon as it is free, the longest first (tools/run_jobs.py); a job's output is
# printed whole when it ends, and after a failure no new job starts.  Processes, not one:
# JAX's caches keep every program compiled, each with its memory maps, and a process that
# compiles hundreds passes Linux's vm.max_map_count (65530); XLA's compiler then fails
# ("Cannot allocate memory") and the process dies (SIGSEGV; numpyro issue #1699).  So each
# NumPyro test file is a job.
NUMPYRO_JOBS := $(patsubst tests/numpyro/%.py,numpyro-%,$(wildcard tests/numpyro/test_*.py))
TEST_JOBS := lint numpyro-test_identity test-pyro test-gpytorch test-numpyro-oldest test-core \
	test-truncnorm numpyro-test_samplers test-wheel test-notebooks test-blackjax docs \
	$(filter-out numpyro-test_identity numpyro-test_samplers,$(NUMPYRO_JOBS)) test-numpyro-doctests
.PHONY: $(TEST_JOBS)
test:
	$(MAKE) --no-print-directory --output-sync=target -j2 setup numpyro-oldest-venv
	$(BIN)/python tools/run_jobs.py $(TEST_JOBS)

# JAX's persistent compilation cache (`make clean` empties it): numpyro compiles its
# sampling loop afresh at every mcmc.run, and many tests run the same programs; each is
# compiled once, then read back (the program XLA would compile again).  One folder a
# worker of make test (tools/run_jobs.py sets it), this one otherwise.
JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax-cache/make
$(TEST_JOBS) test-fast: export JAX_COMPILATION_CACHE_DIR := $(JAX_COMPILATION_CACHE_DIR)
$(TEST_JOBS) test-fast: export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS = 0
$(TEST_JOBS) test-fast: export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES = 0
# torch's intra-op threads, one: the tests' models are small, and two threads a job on two
# cores fight the other job.
$(TEST_JOBS) test-fast: export OMP_NUM_THREADS = 1

# A few minutes, not half an hour: the core's decisions and messages (every error's first
# line), wrong inputs, the failure classes of both backends, one identity case and one
# fault-matrix cell a backend. Run it while you work; `make test` before you commit.
FAST_TESTS := tests/test_core.py tests/test_wrong_inputs.py tests/numpyro/test_causes.py \
	tests/pyro/test_causes.py tests/numpyro/test_messages.py tests/pyro/test_messages.py \
	'tests/numpyro/test_identity.py::test_nuts_draws_are_bit_identical[float32-eight_schools_noncentered-sequential]' \
	'tests/pyro/test_samplers.py::test_nuts_draws_are_identical_to_pyros[eight_schools_noncentered]' \
	'tests/blackjax/test_blackjax.py::test_draws_are_blackjax_bit_for_bit[nuts-eight_schools]' \
	'tests/numpyro/test_fault_matrix.py::test_cell[sequential-sampling-nan]' \
	'tests/pyro/test_fault_matrix.py::test_cell[one process-sampling-nan]' \
	'tests/blackjax/test_fault_matrix.py::test_cell[one chain-sampling-nan]'
test-fast: setup
	$(BIN)/python -m pytest -q $(FAST_TESTS) src/robusthmc/_*.py

# The whole suite on the newest releases (torch stays 2.13.0), in .venv-latest: for finding
# upstream changes on purpose.  `make lock` then writes them into constraints.txt.
test-latest:
	$(MAKE) --no-print-directory test VENV=.venv-latest CONSTRAINTS=constraints-latest.txt

lock:
	rm -rf .venv-lock
	$(MAKE) --no-print-directory setup VENV=.venv-lock CONSTRAINTS=constraints-latest.txt
	{ sed -n '/^#/p' constraints.txt; .venv-lock/bin/python -m pip freeze --all --exclude-editable \
		| sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .venv-lock

$(NUMPYRO_JOBS): numpyro-%: setup
	$(BIN)/python -m pytest tests/numpyro/$*.py

test-numpyro-doctests: setup
	$(BIN)/python -m pytest src/robusthmc/numpyro

# Its venv, built while make test builds the main one (pip keeps one core busy, not two).
numpyro-oldest-venv:
	bash tools/numpyro_version.sh $(firstword $(NUMPYRO_VERSIONS))

# The oldest numpyro release, in a venv of its own, with the identity tests of HMC and of
# NUTS on one model, every chain method and dtype (CI's time; test-numpyro-versions runs all).
test-numpyro-oldest: setup
	PYTEST_ADDOPTS="-k 'not nuts_draws_are_bit_identical or logistic_regression'" bash tools/numpyro_version.sh \
		$(firstword $(NUMPYRO_VERSIONS)) $(NUMPYRO_VERSION_TESTS) tests/numpyro/test_identity.py::test_nuts_draws_are_bit_identical tests/numpyro/test_identity.py::test_hmc_draws_are_bit_identical

# The NumPyro backend against each numpyro release it is checked on, each in a venv of
# its own (.venv-numpyro-VERSION, kept).  make test runs the oldest here (the newest is
# the main venv's) with the identity tests of HMC and of NUTS on one model, every chain
# method and dtype (CI's time); this target runs them all.
NUMPYRO_VERSIONS := 0.20.0 0.21.0 0.22.0
NUMPYRO_VERSION_TESTS := tests/numpyro/test_versions.py tests/numpyro/test_failures.py tests/numpyro/test_messages.py tests/numpyro/test_nothing_lost.py tests/numpyro/test_swap_in.py
test-numpyro-versions:
	for version in $(NUMPYRO_VERSIONS); do bash tools/numpyro_version.sh $$version $(NUMPYRO_VERSION_TESTS) tests/numpyro/test_identity.py || exit 1; done

test-core: setup
	$(BIN)/python -m pytest tests/test_core.py tests/test_cli.py tests/test_wrong_inputs.py tests/test_readme.py \
		src/robusthmc/_*.py src/robusthmc/cli.py src/robusthmc/lessons

test-wheel: setup
	$(BIN)/python -m pytest tests/test_wheel.py

test-pyro: setup
	$(BIN)/python -m pytest tests/pyro src/robusthmc/pyro

test-gpytorch: setup
	$(BIN)/python -m pytest tests/gpytorch src/robusthmc/gpytorch

test-blackjax: setup
	$(BIN)/python -m pytest tests/blackjax src/robusthmc/jax src/robusthmc/blackjax

test-truncnorm: setup
	$(BIN)/python -m pytest tests/test_truncnorm_properties.py tests/test_truncnorm_tails.py

test-notebooks: setup
	$(BIN)/python -m pytest tests/test_notebooks.py

# numpyro's and Pyro's own MCMC tests with robusthmc's kernels swapped in (tools/swap_kernels.py).
# NUMPYRO and PYRO are checkouts of the two projects at the installed releases (their PyPI
# releases ship no tests); numpyro's need funsor.
NUMPYRO_TESTS := test/infer/test_mcmc.py test/infer/test_hmc_gibbs.py test/test_pickle.py test/test_compile.py test/infer/test_reparam.py
PYRO_TESTS := tests/infer/mcmc/test_mcmc_api.py tests/infer/mcmc/test_valid_models.py tests/infer/mcmc/test_hmc.py tests/infer/mcmc/test_nuts.py
upstream-tests: setup
	$(PIP) funsor
	cd $(NUMPYRO) && PYTHONPATH=$(abspath tools) $(abspath $(BIN))/python -m pytest -p swap_kernels -p no:cacheprovider -q $(NUMPYRO_TESTS)
	cd $(PYRO) && PYTHONPATH=$(abspath tools) $(abspath $(BIN))/python -m pytest -p swap_kernels -p no:cacheprovider -q $(PYRO_TESTS)

# BlackJAX's own tests of nuts, hmc and window_adaptation (and of the code built on them) with
# robusthmc's swapped in.  Its source distribution on PyPI ships its tests: fetched at the
# release installed, into .upstream/.  Its tests need chex.
BLACKJAX_TESTS := tests/mcmc/test_sampling.py tests/mcmc/test_multinomial_hmc.py \
	tests/adaptation/test_window_adaptation_imm_seed.py tests/adaptation/test_window_adaptation_fisher_diag.py \
	tests/test_compilation.py tests/test_api_protocols.py tests/smc/test_kernel_compatibility.py
upstream-tests-blackjax: setup
	$(PIP) chex
	rm -rf .upstream/blackjax && mkdir -p .upstream/blackjax
	$(BIN)/python -m pip download -q --no-binary :all: --no-deps -d .upstream/blackjax \
		blackjax==$$($(BIN)/python -c 'import blackjax; print(blackjax.__version__)')
	tar xzf .upstream/blackjax/blackjax-*.tar.gz -C .upstream/blackjax
	cd .upstream/blackjax/blackjax-*/ && PYTHONPATH=$(abspath tools) $(abspath $(BIN))/python -m pytest \
		-p swap_kernels -p no:cacheprovider -q $(BLACKJAX_TESTS)

clean:
	rm -rf $(VENV) .venv-latest .venv-lock .venv-numpyro-* .upstream .jax-cache
