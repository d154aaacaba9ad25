# make demo      : set up .venv with the core install (first use) and run the nightly job on the
#                  bundled sample; no test tools, notebook kernel or pyspark
# make test      : add the test extras (dev, spark, serve, export) to .venv and run the fast suite
# make test-slow : the heavier tests (.ci/run runs test, lint and test-slow)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP_CORE := $(VENV)/.installed-core
STAMP_TEST := $(VENV)/.installed-test
PYTEST_ARGS ?=
TEST_EXTRAS := .[dev,spark,serve,export]
# one install command for both targets: uv installs the stack in seconds where pip takes ~20 s
# (fall back to pip if uv is unavailable). --compile-bytecode: these machines set
# PYTHONDONTWRITEBYTECODE, so without .pyc files every process recompiled numpy/scipy/numba from
# source: ~1.1 s more per start (measured).
define install
	@test -x $(PY) || python3 -m venv $(VENV)
	@($(PY) -m pip install -q uv && \
	  $(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -e '$(1)') \
	  || $(PY) -m pip install -q -e '$(1)'
endef

.PHONY: demo install install-test test test-slow lint clean

# the install ends by compiling the numba kernels into their on-disk cache (`recembed warmup`):
# otherwise the first run pays it (make demo: 75 s cold, 35 s warm; benchmarks/RESULTS.md)
$(STAMP_CORE): pyproject.toml
	$(call install,.)
	$(VENV)/bin/recembed warmup
	@touch $@

# the test extras: pytest, hypothesis, ruff, the notebook runner (dev), pyspark (spark), the HTTP
# service (serve) and the vector databases (export): the tests use the real engines
$(STAMP_TEST): pyproject.toml
	$(call install,$(TEST_EXTRAS))
	$(VENV)/bin/recembed warmup
	@touch $(STAMP_CORE) $@

install: $(STAMP_CORE)
install-test: $(STAMP_TEST)

demo: $(STAMP_CORE)
	$(VENV)/bin/recembed run pipelines/nightly.toml

# two workers, one per core (pytest-xdist), whole files per worker so module fixtures are built
# once: the fast suite is mostly single-threaded Python and numba compiles
test: $(STAMP_TEST)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 $(PYTEST_ARGS)

test-slow: $(STAMP_TEST)
	$(PY) -m pytest -q -m slow --durations=15 $(PYTEST_ARGS)

lint: $(STAMP_TEST)
	$(VENV)/bin/ruff check recembed tests benchmarks

clean:
	rm -rf runs published .pytest_cache
