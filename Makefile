# The two commands of the README: `make run` and `make test`.
.PHONY: run install demo test bench-ingest clean

VENV := .venv
BIN := $(VENV)/bin

run: install demo
	$(BIN)/streamlit run app.py

install:
	bash scripts/install.sh

# Index the bundled sample notes (a no-op when they are already in), and ask one question from the terminal.
demo:
	$(BIN)/python -m ingest data/samples
	$(BIN)/python -m rag ask "When is my first physio appointment after the ankle sprain?"
	@echo "Opening the chat at http://127.0.0.1:8501 (Ctrl-C stops it)"

test:
	bash scripts/install.sh dev gpt4all llamafile e5
	bash scripts/install-browser.sh
	$(BIN)/python -m pytest

bench-ingest:
	$(BIN)/python bench/ingest.py

clean:
	rm -rf .nook
