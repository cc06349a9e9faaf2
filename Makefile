# The two commands of the README: `make run` and `make test`.
.PHONY: run install demo test bench-ingest clean

VENV := .venv
BIN := $(VENV)/bin

run: install demo

install:
	bash scripts/install.sh

# Index the bundled sample notes, then answer a question from them with the bundled model.
demo:
	$(BIN)/python -m ingest data/samples
	$(BIN)/python -m rag ask "When is my first physio appointment after the ankle sprain?"

test:
	bash scripts/install.sh dev
	$(BIN)/python -m pytest

bench-ingest:
	$(BIN)/python bench/ingest.py

clean:
	rm -rf .nook
