"""Faults (issue 6): each one is a single clear line, comes within a bounded time, and Nook works again once it is gone.

LLM server down (recovery only: the one-line error is test_rag_cli.py's), hanging, or answering garbage; a model file
that is not a GGUF or is cut short; a question longer than the context window; the Chroma server gone mid-session;
the disk of the data dir full. docs/RELIABILITY.md ("Faults") lists the message of each.

House rule: no timing assertions. A subprocess timeout is the only bound, generous, and only proves "does not hang".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ingest.manifest import Manifest
from rag.config import Settings
from rag.errors import BackendError, NookError, StoreError
from rag.models import bundled_gguf
from rag.service import NookService
from rag.store import open_client
from tests.conftest import ROOT, SAMPLES
from tests.integration.helpers import free_port, make_corpus, run_ingest, stop_process
from tests.integration.servers import QUESTION, LlamaServer
from tests.integration.test_rag_cli import one_line_error, run_rag

pytestmark = pytest.mark.slow

EMBEDDER = "all-MiniLM-L6-v2"  # the session's real_embedder: the CLI runs and the in-process services share one index
TIMEOUT_S = 3  # NOOK_REQUEST_TIMEOUT for the fault servers
# A CLI run that waits out NOOK_REQUEST_TIMEOUT ends well inside this; one that fell back to the 120 s default would
# not. Only a bound that proves "does not hang", never a timing assertion.
CLI_BOUND_S = 90
BACKENDS = ("ollama", "llamafile")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, real_embedder: Any) -> Path:
    """A data dir holding the bundled samples, indexed once with the real embedding model."""
    from ingest.pipeline import IngestPipeline

    data_dir = tmp_path_factory.mktemp("faults") / "data"
    with pytest.MonkeyPatch.context() as env:  # module scope runs before conftest's per-test NOOK_* cleanup
        for key in [k for k in os.environ if k.startswith("NOOK_") and not k.startswith("NOOK_TEST_")]:
            env.delenv(key)
        report = IngestPipeline(Settings(data_dir=data_dir, embedding_model=EMBEDDER), real_embedder).sync([SAMPLES])
    assert report.chunks_added > 0 and report.failed == 0, report.failures
    return data_dir


def cli(*args: str, data_dir: Path, timeout: float = CLI_BOUND_S, **env: str) -> subprocess.CompletedProcess:
    return run_rag(*args, data_dir=data_dir, timeout=timeout, NOOK_EMBEDDING_MODEL=EMBEDDER, **env)


def server_settings(data_dir: Path, backend: str, url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "embedding_model": EMBEDDER,
        "llm_backend": backend,
        "llm_model": "smollm2:135m" if backend == "ollama" else None,
        "llm_base_url": url,
        "request_timeout": TIMEOUT_S,
        "max_tokens": 24,
        "n_ctx": 2048,
        "temperature": 0.0,
        "retrieval_k": 3,
        "answer_cache": False,
        **extra,
    }
    return Settings(**values)


def error_of(stream: Any, pieces: list[str]) -> NookError:
    """Read the stream into `pieces` until it fails; the error it failed with."""
    with pytest.raises(NookError) as caught:
        for piece in stream:
            pieces.append(piece)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message, message
    return caught.value


# ---------------------------------------------------------------------- misbehaving LLM servers


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes


class FaultServer:
    """An HTTP server on 127.0.0.1 that misbehaves on purpose; a context manager.

    With `reply`, every request gets that reply. Without it, the requests whose method is in `hang_on` are accepted
    and never answered (until the server stops); the others get "ok".
    """

    def __init__(self, port: int, reply: Reply | None = None, hang_on: tuple[str, ...] = ("GET", "POST")) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.released = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

            def _answer(self) -> None:
                if self.command == "POST":
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if reply is None and self.command in hang_on:
                    server.released.wait()  # accepted, never answered
                    return
                status, content_type, body = (reply.status, reply.content_type, reply.body) if reply else (
                    200, "text/plain", b"ok"
                )  # fmt: skip
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815 - http.server's names

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n<body><center><h1>502 Bad Gateway</h1>"
    b"</center><hr><center>nginx</center></body></html>\n"
)
TRUNCATED = {  # one streamed piece of each backend's own format, cut off mid-string
    "ollama": b'{"model":"smollm2:135m","created_at":"2025-01-01T00:00:00Z","message":{"role":"assistant","content":"T',
    "llamafile": b'data: {"content": "Th',
}
GARBAGE = ("not JSON", "truncated JSON", "an HTML error page", "HTTP 500")


def garbage_reply(kind: str, backend: str) -> Reply:
    return {
        "not JSON": Reply(200, "text/plain", b"Hello! This is not the server you are looking for.\n"),
        "truncated JSON": Reply(200, "application/x-ndjson", TRUNCATED[backend]),
        "an HTML error page": Reply(200, "text/html", HTML_PAGE),
        "HTTP 500": Reply(500, "text/html", b"<html><body><h1>Internal Server Error</h1><p>upstream gone</p></body>"),
    }[kind]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hang_on", [("GET", "POST"), ("POST",)], ids=["everything", "generation"])
def test_a_hanging_server_is_one_line_naming_the_url_and_the_timeout(
    indexed: Path, backend: str, hang_on: tuple[str, ...]
) -> None:
    # "everything": the server accepts connections and never answers (Nook's reachability check waits the timeout);
    # "generation": it answers lookups but never the completion (the client's own read timeout fires).
    with FaultServer(free_port(), hang_on=hang_on) as server:
        result = cli(
            "ask", QUESTION, "--backend", backend, "--model", "smollm2:135m", data_dir=indexed,
            NOOK_LLM_BASE_URL=server.url, NOOK_REQUEST_TIMEOUT=str(TIMEOUT_S), NOOK_ANSWER_CACHE="false",
        )  # fmt: skip
    message = one_line_error(result)
    assert server.url in message and f"within {TIMEOUT_S} s" in message and "NOOK_REQUEST_TIMEOUT" in message, message
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", GARBAGE)
def test_garbage_from_the_server_is_one_line_and_never_the_answer(
    indexed: Path, real_embedder: Any, backend: str, kind: str
) -> None:
    reply = garbage_reply(kind, backend)
    with FaultServer(free_port(), reply=reply) as server:
        service = NookService(server_settings(indexed, backend, server.url), embedder=real_embedder)
        pieces: list[str] = []
        error = error_of(service.ask(QUESTION), pieces)
    message = str(error)
    assert isinstance(error, BackendError), message
    assert pieces == [], pieces  # nothing of the reply was streamed as an answer
    assert server.url in message and "<" not in message, message
    if kind == "HTTP 500":
        assert "HTTP 500" in message and "Internal Server Error upstream gone" in message, message
    else:
        assert "NOOK_LLM_BASE_URL" in message, message  # says what to check


@contextmanager
def real_llm_server(backend: str, port: int, log: Path) -> Iterator[str]:
    """The bundled SmolLM2 behind a real server of the backend's kind on 127.0.0.1:port; yields its URL."""
    url = f"http://127.0.0.1:{port}"
    if backend == "llamafile":
        server = LlamaServer(bundled_gguf(), log, n_ctx=2048, threads=2)
        server.port, server.url = port, url
        server.args[server.args.index("--port") + 1] = str(port)
        with server:
            yield url
        return
    command = [sys.executable, "-m", "tests.ollama_server", "--port", str(port), "--model", str(bundled_gguf()),
               "--name", "smollm2:135m"]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"{url}/api/version", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"the Ollama test server did not start:\n{log.read_text()}"
                time.sleep(0.2)
        yield url
    finally:
        stop_process(process)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_same_service_answers_once_a_down_or_garbled_server_is_replaced_by_a_real_one(
    indexed: Path, real_embedder: Any, backend: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The default request timeout: a freshly started server's first answer may take a while on two busy cores.
    service = NookService(server_settings(indexed, backend, url, request_timeout=120), embedder=real_embedder)

    down = str(error_of(service.ask(QUESTION), []))  # nothing listens on the port yet
    assert url in down and "is it running?" in down, down
    with FaultServer(port, reply=garbage_reply("not JSON", backend)):
        garbled = str(error_of(service.ask(QUESTION), []))
    assert url in garbled and "NOOK_LLM_BASE_URL" in garbled, garbled

    with real_llm_server(backend, port, tmp_path / "server.log"):
        stream = service.ask(QUESTION)
        pieces = list(stream)
    assert pieces and stream.result.answer.strip() and stream.result.sources


# ---------------------------------------------------------------------- model files


@pytest.fixture(scope="module")
def broken_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A .gguf of random bytes, and copies of the bundled GGUF cut inside its metadata and inside its tensors."""
    folder = tmp_path_factory.mktemp("models")
    source = bundled_gguf()
    data = source.read_bytes()
    random_bytes = folder / "random.gguf"
    random_bytes.write_bytes(os.urandom(1 << 20))
    cut_in_metadata = folder / "cut-in-metadata.gguf"
    cut_in_metadata.write_bytes(data[: 64 * 1024])
    cut_in_tensors = folder / "cut-in-tensors.gguf"
    cut_in_tensors.write_bytes(data[: len(data) // 2])
    return {"random bytes": random_bytes, "cut in its metadata": cut_in_metadata, "cut in its tensors": cut_in_tensors}


@pytest.mark.parametrize("which", ["random bytes", "cut in its metadata", "cut in its tensors"])
@pytest.mark.parametrize("family", ["read from the file", "forced"])
def test_a_model_file_that_is_not_a_whole_gguf_is_one_line_not_a_crash(
    indexed: Path, broken_models: dict[str, Path], which: str, family: str
) -> None:
    # A forced prompt family skips Nook's own reading of the GGUF metadata: the file goes straight to llama.cpp.
    extra = {"NOOK_PROMPT_FAMILY": "chatml"} if family == "forced" else {}
    path = broken_models[which]
    result = cli("ask", QUESTION, "--model", str(path), data_dir=indexed, NOOK_ANSWER_CACHE="false", **extra)
    message = one_line_error(result)  # exit code 1: not a segfault (negative) or a traceback
    assert str(path) in message and ("GGUF" in message or "llama.cpp cannot load" in message), message


def test_the_same_service_answers_once_a_truncated_model_file_is_replaced(
    indexed: Path, real_embedder: Any, tmp_path: Path
) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(bundled_gguf().read_bytes()[: 1 << 20])
    settings = Settings(
        data_dir=indexed, embedding_model=EMBEDDER, llm_model=str(model), max_tokens=24, n_ctx=2048, retrieval_k=3,
        answer_cache=False,
    )  # fmt: skip
    service = NookService(settings, embedder=real_embedder)
    error = error_of(service.ask(QUESTION), [])
    assert isinstance(error, BackendError) and str(model) in str(error), error
    shutil.copyfile(bundled_gguf(), model)
    stream = service.ask(QUESTION)
    assert "".join(stream).strip() and stream.result.sources


# ---------------------------------------------------------------------- context overflow

LONG_QUESTION = " ".join(["How did I feed the sourdough starter before the long weekend away?"] * 420)  # 5,040 words


def test_a_question_far_longer_than_the_context_is_one_line_not_cut(indexed: Path) -> None:
    # The chain never cuts the question (cutting it would answer another question): it drops context chunks
    # while that helps, then says so.
    assert len(LONG_QUESTION.split()) > 5000
    result = cli("ask", LONG_QUESTION, data_dir=indexed, NOOK_N_CTX="256", NOOK_ANSWER_CACHE="false")
    message = one_line_error(result)
    assert "question is too long for the model's context window (256 tokens" in message, message


def test_max_tokens_that_leave_no_room_in_the_context_blame_the_settings_not_the_question(indexed: Path) -> None:
    result = cli("ask", QUESTION, data_dir=indexed, NOOK_N_CTX="256", NOOK_MAX_TOKENS="512")
    message = one_line_error(result)
    assert "max_tokens (512) leaves no room" in message and "NOOK_N_CTX" in message, message


def test_an_overlong_follow_up_is_one_line_and_the_service_answers_the_next_question(
    indexed: Path, real_embedder: Any
) -> None:
    # With history the question is first rewritten by the model: too long for that, it is used as asked.
    settings = Settings(
        data_dir=indexed, embedding_model=EMBEDDER, max_tokens=24, n_ctx=512, retrieval_k=3, answer_cache=False
    )
    service = NookService(settings, embedder=real_embedder)
    history = [("What is my sourdough starter called?", "It is called Gloop [1].")]
    error = error_of(service.ask(LONG_QUESTION, history=history), [])
    assert "question is too long" in str(error), error
    stream = service.ask("What is the studio cat called?", history=history)
    assert "".join(stream).strip()


# ---------------------------------------------------------------------- the Chroma server gone mid-session


class ChromaServer:
    """`chroma run` on 127.0.0.1 at one port and path, which can be stopped and started again."""

    def __init__(self, path: Path, port: int) -> None:
        self.path = path
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        chroma = Path(sys.executable).with_name("chroma")
        self.process = subprocess.Popen(
            [str(chroma), "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    pytest.fail(f"chroma run did not start on port {self.port}")
                time.sleep(0.3)

    def stop(self) -> None:
        """Kill it: a server that dies, not one that shuts down politely."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def chroma(tmp_path: Path) -> Iterator[ChromaServer]:
    server = ChromaServer(tmp_path / "server-data", free_port())
    server.start()
    yield server
    server.stop()


def test_the_same_service_works_again_once_a_killed_chroma_server_is_restarted(
    tmp_path: Path, real_embedder: Any, chroma: ChromaServer
) -> None:
    from ingest.pipeline import IngestPipeline

    settings = Settings(
        data_dir=tmp_path / "data", embedding_model=EMBEDDER, chroma_url=chroma.url, llm_backend="fake",
        answer_cache=False,
    )  # fmt: skip
    report = IngestPipeline(settings, real_embedder).sync([SAMPLES])
    assert report.chunks_added > 0 and report.failed == 0
    service = NookService(settings, embedder=real_embedder)
    assert service.search(QUESTION).hits

    chroma.stop()
    for call in (lambda: service.search(QUESTION), lambda: service.ask(QUESTION).text(), service.stats):
        with pytest.raises(StoreError) as caught:
            call()
        message = str(caught.value)
        assert "\n" not in message and chroma.url in message and "chroma run" in message, message
    with pytest.raises(StoreError) as caught:  # a sync says the same
        IngestPipeline(settings, real_embedder, client=service.searcher.client).sync([SAMPLES])
    assert chroma.url in str(caught.value)

    chroma.start()  # same port, same path
    assert service.search(QUESTION).hits
    assert service.ask(QUESTION).text()
    assert service.stats().chunks == report.chunks_added


# ---------------------------------------------------------------------- the data dir's disk full


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs mounted for this test only; skipped where mounting is not allowed."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here, so no small file system to fill")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 4 MB tmpfs to fill (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(folder: Path, name: str, leave: int) -> Path:
    """A file that takes all but `leave` bytes of the free space where `folder` lives."""
    free = shutil.disk_usage(folder).free
    filler = folder / name
    filler.write_bytes(b"\0" * max(0, free - leave))
    return filler


def test_a_full_disk_is_one_line_per_run_and_a_rerun_after_freeing_space_completes(
    tmp_path: Path, small_disk: Path
) -> None:
    corpus = make_corpus(tmp_path / "corpus", files=30)
    data = small_disk / "data"
    filler = fill(small_disk, "filler", leave=900_000)  # room for the empty index and part of the chunks

    full = run_ingest(corpus, data_dir=data, timeout=300, NOOK_EMBEDDING_MODEL=EMBEDDER)
    assert full.returncode in (1, 2), full.stdout
    message = full.stderr.strip()
    assert message.startswith("error: no space left on the device holding") and str(data) in message, full.stderr
    assert "\n" not in message and "Traceback" not in full.stderr

    rest = fill(small_disk, "filler-2", leave=0)  # not a byte left: even opening the index fails
    search = cli("search", "sourdough starter", data_dir=data, timeout=300)
    assert "no space left" in one_line_error(search)

    filler.unlink()
    rest.unlink()
    again = run_ingest(corpus, data_dir=data, timeout=600, NOOK_EMBEDDING_MODEL=EMBEDDER)
    assert again.returncode == 0, again.stderr
    settings = Settings(data_dir=data, embedding_model=EMBEDDER)
    with Manifest(settings.manifest_path, settings.store_key, settings.collection) as manifest:
        rows = manifest.files()
    claimed = sorted(cid for record in rows.values() for cid in record.chunk_ids)
    stored = sorted(open_client(settings).get_collection(settings.collection).get(include=[])["ids"])
    assert stored == claimed and len(stored) > 100
    assert {Path(p).name for p in rows} == {p.name for p in corpus.iterdir()}
    assert cli("search", "sourdough starter", "--json", data_dir=data, timeout=300).returncode == 0
