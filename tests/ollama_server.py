"""Test fixture: a small Ollama-API-compatible server backed by a real GGUF model through llama-cpp-python.

No Ollama server can be installed on the test machines, so the Ollama backend is proven against this stand-in.
It speaks what langchain-ollama and the `ollama` client call, as Ollama's published API (docs/api.md in the
ollama repository) describes:

    GET  /api/version   {"version": ...}
    GET  /api/tags      the one model, with name, model, modified_at, size, digest, details
    POST /api/show      modelfile, parameters, template (the GGUF's `tokenizer.chat_template`), details, model_info
    POST /api/generate  prompt (+ system, raw); NDJSON stream of {"response", "done"} unless "stream": false
    POST /api/chat      messages; NDJSON stream of {"message": {"role", "content"}, "done"} unless "stream": false

The final object of a stream carries done_reason, total_duration, load_duration, prompt_eval_count,
prompt_eval_duration, eval_count and eval_duration (nanoseconds), as Ollama's does. An unknown model name gets
404 {"error": "model 'x' not found"}. One generation runs at a time. It is not part of Nook, and it is not Ollama:
it serves one model with a fixed 2048-token context (a longer prompt is a 500 error where Ollama would truncate it),
ignores num_ctx, keep_alive and images, and refuses format, think and tools with a 400.

    python -m tests.ollama_server --port 11434 --model path/to/model.gguf [--name smollm2:135m]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

VERSION = "0.0.0-nook-test"
N_CTX = 2048
# llama.cpp's `general.file_type` numbers, named as Ollama reports quantization_level.
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
              11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
              17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}


class NotFound(Exception):
    """The request names a model this server does not have."""


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _canonical(name: str) -> str:
    """Ollama's model names: a missing tag means `latest`."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _number(value: str) -> Any:
    """llama-cpp reports GGUF metadata as strings; give numbers back as numbers, like Ollama's model_info."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


class Backend:
    """The loaded model and what Ollama says about it."""

    def __init__(self, model_path: Path, name: str) -> None:
        self.llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=N_CTX, n_threads=2, verbose=False)
        self.path, self.name, self.lock = model_path, _canonical(name), threading.Lock()
        meta = self.llm.metadata
        self.template = meta.get("tokenizer.chat_template", "")
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        # The formatter llama-cpp's create_chat_completion builds from the GGUF's `tokenizer.chat_template`.
        self.formatter = Jinja2ChatFormatter(
            self.template, self.llm._model.token_get_text(eos), self.llm._model.token_get_text(bos)
        ) if self.template else None
        stat = model_path.stat()
        self.modified_at = datetime.fromtimestamp(stat.st_mtime, UTC).isoformat().replace("+00:00", "Z")
        self.size = stat.st_size
        with model_path.open("rb") as handle:
            self.digest = hashlib.file_digest(handle, "sha256").hexdigest()
        params = self.llm._model.n_params()
        family = meta.get("general.architecture", "unknown")
        self.details = {
            "parent_model": "", "format": "gguf", "family": family, "families": [family],
            "parameter_size": f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.2f}M",
            "quantization_level": FILE_TYPES.get(_number(meta.get("general.file_type", "-1")), "unknown"),
        }
        self.model_info = {k: _number(v) for k, v in meta.items() if not k.startswith("tokenizer.chat_template")}
        self.model_info["general.parameter_count"] = params

    def check(self, request: dict[str, Any]) -> str:
        requested = str(request.get("model") or request.get("name") or "")
        if _canonical(requested) != self.name:
            raise NotFound(f"model '{requested}' not found")
        return self.name

    def tags(self) -> dict[str, Any]:
        entry = {"name": self.name, "model": self.name, "modified_at": self.modified_at, "size": self.size,
                 "digest": self.digest, "details": self.details}
        return {"models": [entry]}

    def show(self) -> dict[str, Any]:
        eos = self.llm._model.token_get_text(self.llm.token_eos())
        return {
            "modelfile": f'# Modelfile of the Nook test server\nFROM {self.path}\nTEMPLATE """{self.template}"""\n'
                         f'PARAMETER stop "{eos}"\n',
            "parameters": f'num_ctx                        {N_CTX}\nstop                           "{eos}"',
            "template": self.template,
            "details": self.details,
            "model_info": self.model_info,
            "capabilities": ["completion"],
            "modified_at": self.modified_at,
        }

    def prompt(self, kind: str, request: dict[str, Any]) -> tuple[str | list[int], list[str]]:
        """What the model continues, and the stop strings that go with it.

        A raw generate prompt goes in as given. Otherwise the messages (for generate: system + prompt, as Ollama
        builds them) are rendered with the GGUF's own chat template by llama-cpp's Jinja2ChatFormatter and
        tokenized as `Llama.create_chat_completion` does; doing it here lets the server count tokens exactly.
        """
        if kind == "generate" and request.get("raw"):
            return str(request.get("prompt") or ""), []
        if kind == "generate":
            messages = [{"role": "system", "content": request["system"]}] if request.get("system") else []
            messages.append({"role": "user", "content": request.get("prompt") or ""})
        else:
            messages = [{"role": m.get("role", "user"), "content": m.get("content") or ""}
                        for m in request.get("messages") or []]
        if self.formatter is None:
            raise ValueError("this model has no chat template: use /api/generate with raw prompts")
        rendered = self.formatter(messages=messages)
        tokens = self.llm.tokenize(rendered.prompt.encode(), add_bos=not rendered.added_special, special=True)
        return tokens, list(rendered.stop or [])

    def run(self, kind: str, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Generate under the lock: {"text"} per streamed piece, then a final dict with Ollama's statistics."""
        opts = request.get("options") or {}
        predict = opts.get("num_predict")
        counter = _TokenCounter()
        with self.lock:
            started = time.perf_counter_ns()
            prompt, stop = self.prompt(kind, request)
            chunks = self.llm.create_completion(
                prompt,
                stream=True,
                max_tokens=None if predict is None or predict < 0 else predict,  # -1: until the context is full
                temperature=opts.get("temperature", 0.8),  # Ollama's defaults
                top_p=opts.get("top_p", 0.9),
                top_k=opts.get("top_k", 40),
                min_p=opts.get("min_p", 0.0),
                repeat_penalty=opts.get("repeat_penalty", 1.1),
                stop=list(opts.get("stop") or []) + stop,
                seed=opts.get("seed"),
                stopping_criteria=llama_cpp.StoppingCriteriaList([counter]),
            )
            collected, reason = [], "stop"
            for chunk in chunks:
                choice = chunk["choices"][0]
                if choice["text"]:
                    collected.append(choice["text"])
                    yield {"text": choice["text"]}
                reason = choice["finish_reason"] or reason
            ended = time.perf_counter_ns()
            first = counter.first_ns or ended
            yield {
                "done_reason": reason,
                "total_duration": ended - started,
                "load_duration": 0,  # loaded once at start
                "prompt_eval_count": counter.prompt_tokens,
                "prompt_eval_duration": first - started,
                "eval_count": counter.sampled,
                "eval_duration": ended - first,
                "text": "".join(collected),
            }


class _TokenCounter:
    """A llama-cpp stopping criterion that never stops: it sees the prompt length and every sampled token.

    llama-cpp calls it once per sampled token with the tokens before it, and once more after the loop with
    the same tokens again; that repeated call is not counted.
    """

    def __init__(self) -> None:
        self.prompt_tokens = self.sampled = self._seen = 0
        self.first_ns: int | None = None

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        if not self.sampled:
            self.prompt_tokens, self.first_ns = len(input_ids), time.perf_counter_ns()
        if len(input_ids) > self._seen:
            self.sampled, self._seen = self.sampled + 1, len(input_ids)
        return False


class Handler(BaseHTTPRequestHandler):
    """Routes Ollama's endpoints; NDJSON streams go out with chunked transfer encoding, as Ollama's do."""

    protocol_version = "HTTP/1.1"
    backend: Backend  # set by serve()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: tests read stderr on failure only
        pass

    def _send(self, status: int, body: Any, content_type: str = "application/json; charset=utf-8") -> None:
        data = (json.dumps(body) if not isinstance(body, str) else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/":
            self._send(200, "Ollama is running", "text/plain; charset=utf-8")
        elif self.path == "/api/version":
            self._send(200, {"version": VERSION})
        elif self.path == "/api/tags":
            self._send(200, self.backend.tags())
        else:
            self._send(404, "404 page not found", "text/plain; charset=utf-8")

    def do_POST(self) -> None:  # noqa: N802
        try:
            length = int(self.headers.get("Content-Length") or 0)
            request = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(request, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            return self._send(400, {"error": f"invalid request body: {exc}"})
        if self.path not in ("/api/show", "/api/generate", "/api/chat"):
            return self._send(404, "404 page not found", "text/plain; charset=utf-8")
        try:
            model = self.backend.check(request)
        except NotFound as exc:
            return self._send(404, {"error": str(exc)})
        if self.path == "/api/show":
            return self._send(200, self.backend.show())
        if request.get("format") or request.get("think") or request.get("tools"):
            return self._send(400, {"error": "format, think and tools are not supported by this test server"})
        self._generate("chat" if self.path == "/api/chat" else "generate", model, request)

    def _generate(self, kind: str, model: str, request: dict[str, Any]) -> None:
        def shape(piece: dict[str, Any], done: bool, text: str) -> dict[str, Any]:
            head = {"model": model, "created_at": _now()}
            body = {"message": {"role": "assistant", "content": text}} if kind == "chat" else {"response": text}
            stats = {k: v for k, v in piece.items() if k != "text"} if done else {}
            return {**head, **body, "done": done, **stats}

        pieces = self.backend.run(kind, request)
        try:
            first = next(pieces)  # errors before the first token (e.g. prompt too long) become a plain 500
            if request.get("stream", True) is False:
                final = first
                for final in pieces:  # noqa: B007 - the last object carries the whole text and the statistics
                    pass
                return self._send(200, shape(final, True, final["text"]))
        except Exception as exc:  # noqa: BLE001 - reported to the client as Ollama does
            return self._send(500, {"error": str(exc)})
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            try:
                for piece in itertools.chain([first], pieces):
                    done = "done_reason" in piece
                    self._chunk(json.dumps(shape(piece, done, "" if done else piece["text"])).encode() + b"\n")
            except (BrokenPipeError, ConnectionResetError):
                raise
            except Exception as exc:  # noqa: BLE001 - a failure mid-stream is an error line, as in Ollama
                self._chunk(json.dumps({"error": str(exc)}).encode() + b"\n")
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            pieces.close()  # the client went away: stop generating and release the lock

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def serve(port: int, model: Path, name: str) -> None:
    """Load the model, then answer on 127.0.0.1:port until interrupted."""
    Handler.backend = Backend(model, name)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"ollama test server: {Handler.backend.name} on http://127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", type=Path, required=True, help="a .gguf file")
    parser.add_argument("--name", default="smollm2:135m", help="the model name clients ask for")
    args = parser.parse_args(argv)
    serve(args.port, args.model, args.name)


if __name__ == "__main__":
    main()
