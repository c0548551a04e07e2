# The two commands of the README. Each installs what it needs first.
.PHONY: demo test bootstrap bench

VENV := .venv/bin

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	$(VENV)/pos-demo

test: bootstrap
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy
	$(VENV)/pytest

bench: bootstrap
	@for b in bench/bench_*.py; do echo "== $$b"; $(VENV)/python $$b || exit 1; done
