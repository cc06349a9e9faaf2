"""`python -m rag ask|search|models` end to end: the bundled SmolLM2 through llama.cpp, the real embedder and Chroma."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.helpers import free_port, nook_env

pytestmark = pytest.mark.slow

FAST = {"NOOK_MAX_TOKENS": "24", "NOOK_N_CTX": "2048", "NOOK_RETRIEVAL_K": "3"}


def run_rag(*args: str, data_dir: Path, stdin: str | None = None, timeout: float = 300, **env: str):
    return subprocess.run(
        [sys.executable, "-m", "rag", *args],
        cwd=ROOT,
        env=nook_env(data_dir, **{**FAST, **env}),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_ask_streams_an_answer_then_lists_sources(indexed: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "rag", "ask", "What is my sourdough starter called?"],
        cwd=ROOT, env=nook_env(indexed, **FAST, NOOK_ANSWER_CACHE="false"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    reads = []
    while chunk := process.stdout.read1(4096):  # type: ignore[attr-defined]
        reads.append(chunk.decode("utf-8", "replace"))
    process.wait(timeout=120)
    output = "".join(reads)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    answer, _, sources = output.partition("\nSources:\n")
    assert answer.strip()
    assert len(reads) > 2  # the answer arrived in pieces, not in one write at the end
    assert "sourdough.md" in sources.splitlines()[0]


def test_ask_json_and_stdin_lines(indexed: Path) -> None:
    one = run_rag("ask", "How many links does the bike chain have now?", "--json", data_dir=indexed)
    assert one.returncode == 0, one.stderr
    record = json.loads(one.stdout)
    assert set(record) == {"question", "answer", "found", "sources"}
    assert any(s["source"].endswith("bike-maintenance-log.pdf") and s["page"] == 2 for s in record["sources"])
    assert [s["number"] for s in record["sources"]] == list(range(1, len(record["sources"]) + 1))

    many = run_rag("ask", data_dir=indexed, stdin="What is my sourdough starter called?\n\nWhat is the studio cat called?\n")
    lines = [json.loads(line) for line in many.stdout.splitlines()]
    assert [r["question"] for r in lines] == ["What is my sourdough starter called?", "What is the studio cat called?"]
    assert all(r["answer"] and r["sources"] for r in lines)


def test_search_json_and_stdin(indexed: Path) -> None:
    one = run_rag("search", "What is the studio cat called?", "-k", "3", "--json", data_dir=indexed)
    record = json.loads(one.stdout)
    assert len(record["results"]) == 3
    assert set(record["results"][0]) == {"text", "source", "page", "score"}
    assert record["results"][0]["source"].endswith("2024-03-04.md")
    many = run_rag("search", "-k", "2", data_dir=indexed, stdin="sourdough starter\n布洛芬\n")
    lines = [json.loads(line) for line in many.stdout.splitlines()]
    assert len(lines) == 2 and all(len(r["results"]) == 2 for r in lines)
    # A Chinese question finds the GBK note (decoded, embedded and keyword-indexed as Chinese).
    assert any(r["source"].endswith("家庭药箱.txt") for r in lines[1]["results"])


def test_models_lists_the_bundled_gguf(tmp_path: Path) -> None:
    result = run_rag("models", "--json", data_dir=tmp_path)
    entries = json.loads(result.stdout)
    smol = [e for e in entries if e["name"] == "SmolLM2-135M-Instruct.Q4_1.gguf"]
    assert smol and smol[0]["prompt_family"] == "chatml" and smol[0]["quantisation"] == "Q4_1"
    assert smol[0]["fits_in_memory"] is True and 90 < smol[0]["size_mb"] < 110


def one_line_error(result: subprocess.CompletedProcess) -> str:
    # How fast these errors come is measured in bench/answer.py (docs/BENCHMARKS.md), not asserted here.
    assert result.returncode == 1, result.stdout
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message and "Traceback" not in result.stderr
    return message


def test_empty_index_is_one_line(tmp_path: Path) -> None:
    result = run_rag("ask", "anything?", data_dir=tmp_path / "empty")
    message = one_line_error(result)
    assert "python -m ingest" in message


def test_missing_model_is_one_line(indexed: Path) -> None:
    result = run_rag("ask", "What is my sourdough starter called?", "--model", "/no/such/model.gguf", data_dir=indexed)
    message = one_line_error(result)
    assert "model file not found" in message


def test_server_down_is_one_line(indexed: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_rag(
        "ask", "What is my sourdough starter called?", "--backend", "ollama", "--model", "llama3.2",
        data_dir=indexed, NOOK_LLM_BASE_URL=url, NOOK_ANSWER_CACHE="false",
    )
    message = one_line_error(result)
    assert url in message
