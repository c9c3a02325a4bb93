# The usual loops. `make fast`: the fast tier (plain pytest); `make test`: every tier, as CI runs it.
PY := .venv/bin/python

.PHONY: fast test slow cluster lint

fast:
	$(PY) -m pytest -q

slow:
	$(PY) -m pytest -q -m slow

cluster:
	$(PY) -m pytest -q -m cluster || [ $$? -eq 5 ]

test: lint fast slow cluster

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
