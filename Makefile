# Counterpoint. `make demo` runs the main job on the embedded broker; `make test` runs the suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The integration tests' mcp-server-sqlite, in an environment of its own (see its requirements).
MCP_SQLITE := $(VENV)/mcp-sqlite/bin/mcp-server-sqlite
# The top-level folders installed as counterpoint.<folder>, read from pyproject.toml's package
# list (the only one), and the other top-level packages as NAME=FOLDER from its package-dir (the
# demo business). mypy and import-linter cannot follow setuptools' editable finder that maps
# them, so they read a tree of symlinks with that shape.
PACKAGES = $(shell $(PYTHON) -c 'import tomllib; t = tomllib.load(open("pyproject.toml", "rb")); print(*sorted({p.split(".")[1] for p in t["tool"]["setuptools"]["packages"] if p.startswith("counterpoint.")}))')
ROOTS = $(shell $(PYTHON) -c 'import tomllib; t = tomllib.load(open("pyproject.toml", "rb")); print(*sorted(f"{k}={v}" for k, v in t["tool"]["setuptools"]["package-dir"].items() if k != "counterpoint"))')
TYPECHECK := .typecheck
# One pytest-xdist worker per core, a whole test module at a time on one worker, longest first
# (tests/conftest.py: how the work is cut, and why serial against KAFKA_BOOTSTRAP_SERVERS).
# Most integration tests wait on the broker and on agent start-up more than they compute.
# A bare `pytest` runs serially.
PARALLEL := -n auto --dist loadfile --no-loadscope-reorder

.PHONY: demo test unit integration lint typecheck typecheck-tree bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@# pip compiles a wheel's modules at install, not an editable install's; where
	@# PYTHONDONTWRITEBYTECODE is set nothing ever writes them, and every agent process would
	@# compile the project's modules again at each start (about a fifth of its start-up CPU).
	$(BIN)/python -m compileall -q $(PACKAGES)
	@touch $(STAMP)

$(MCP_SQLITE): tests/support/mcp-sqlite-requirements.txt
	$(PYTHON) -m venv $(VENV)/mcp-sqlite
	$(VENV)/mcp-sqlite/bin/python -m pip install --quiet -r $<
	@touch $@

demo: $(STAMP)
	$(BIN)/counterpoint demo

# Phony, so a package added later gets its link too.
typecheck-tree:
	@mkdir -p $(TYPECHECK)/counterpoint
	@for p in $(PACKAGES); do ln -sfn ../../$$p $(TYPECHECK)/counterpoint/$$p; done
	@for r in $(ROOTS); do ln -sfn ../$${r#*=} $(TYPECHECK)/$${r%%=*}; done
	@ln -sfn ../demo $(TYPECHECK)/counterpoint_demo

lint: $(STAMP) typecheck-tree
	$(BIN)/ruff check .
	PYTHONPATH=$(TYPECHECK) $(BIN)/lint-imports

typecheck: $(STAMP) typecheck-tree
	MYPYPATH=$(TYPECHECK) $(BIN)/mypy -p counterpoint -p counterpoint_demo

test: lint typecheck $(MCP_SQLITE)
	$(BIN)/pytest $(PARALLEL)

unit: $(STAMP)
	$(BIN)/pytest $(PARALLEL) tests/unit

integration: $(STAMP) $(MCP_SQLITE)
	$(BIN)/pytest $(PARALLEL) tests/integration

bench: $(STAMP)
	$(BIN)/python -m tests.bench.run

clean:
	rm -rf $(VENV) $(TYPECHECK) .counterpoint .pytest_cache .mypy_cache .ruff_cache
