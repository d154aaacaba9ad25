# make demo : set up .venv (first use) and run the nightly job on the bundled sample
# make test : set up .venv (first use) and run the default test suite
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@# uv installs the stack in seconds where pip takes ~20 s; fall back to pip if uv is unavailable.
	@# --compile-bytecode: these machines set PYTHONDONTWRITEBYTECODE, so without .pyc files every
	@# process recompiled numpy/scipy/numba from source: ~1.1 s more per start (measured).
	@($(PY) -m pip install -q uv && \
	  $(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -e '.[dev,spark,serve,export]') \
	  || $(PY) -m pip install -q -e '.[dev,spark,serve,export]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/recembed run pipelines/nightly.toml

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check recembed tests benchmarks

clean:
	rm -rf runs published .pytest_cache
