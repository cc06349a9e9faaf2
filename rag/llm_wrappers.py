"""LangChain LLM wrappers mended where the community ones fall short: GPT4All streaming, llamafile server errors."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import requests
from langchain_community.llms import GPT4All, Llamafile
from langchain_core.outputs import GenerationChunk

from rag.errors import BackendError


def held_back(text: str, stops: list[str]) -> int:
    """Length of the longest end of `text` that could still grow into a stop sequence (kept back, not shown)."""
    for size in range(min(len(text), max(map(len, stops), default=1) - 1), 0, -1):
        if any(stop.startswith(text[-size:]) for stop in stops):
            return size
    return 0


class StreamingGPT4All(GPT4All):
    """GPT4All whose `.stream()` yields each token, with stop sequences matched as plain text.

    The community wrapper yields one chunk from `.stream()` and splits on stop words as a regular expression,
    so "[INST]" would cut the answer at its first I, N, S or T.
    """

    def _stream(
        self, prompt: str, stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> Iterator[GenerationChunk]:
        stops = [s for s in (stop or []) if s]
        stopped = False
        params = {
            **self._default_params(),
            **kwargs,
            "streaming": True,
            "callback": lambda _token_id, _response: not stopped,  # False ends gpt4all's generation
        }
        text, sent = "", 0
        for token in self.client.generate(prompt, **params):
            if stopped:
                continue  # drain: generation ends at the next token and the model is free again
            text += token
            hits = [i for i in (text.find(s, max(0, sent - len(s))) for s in stops) if i >= 0]
            if hits:
                stopped = True
                text = text[: min(hits)]
                end = len(text)
            else:
                end = len(text) - held_back(text, stops)
            if end > sent:
                piece, sent = text[sent:end], end
                if run_manager:
                    run_manager.on_llm_new_token(piece, verbose=self.verbose)
                yield GenerationChunk(text=piece)
        if sent < len(text):
            piece = text[sent:]
            if run_manager:
                run_manager.on_llm_new_token(piece, verbose=self.verbose)
            yield GenerationChunk(text=piece)

    def _call(self, prompt: str, stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any) -> str:
        return "".join(chunk.text for chunk in self._stream(prompt, stop, run_manager, **kwargs))


_TAG = re.compile(r"<[^>]*>")


def plain_text(body: str, limit: int = 200) -> str:
    """A server's error body as one short line of text: HTML tags dropped, whitespace collapsed."""
    return " ".join(_TAG.sub(" ", body).split())[:limit]


class CheckedLlamafile(Llamafile):
    """Llamafile that raises on an HTTP error or a reply that is not llama.cpp's event stream, instead of streaming it.

    The community wrapper streams an error page as the answer and skips every line that is not `data: ...`, so a
    server that is not a llamafile gives an empty answer rather than an error.
    """

    request_timeout: float | None = None  # the community wrapper declares int: 0.5 s would become 0, which fails

    def _stream(
        self, prompt: str, stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> Iterator[GenerationChunk]:
        params = self._get_parameters(stop=stop, **kwargs)
        params["stream"] = True
        response = requests.post(
            url=f"{self.base_url}/completion",
            headers={"Content-Type": "application/json"},
            json={"prompt": prompt, **params},
            stream=True,
            timeout=self.request_timeout,
        )
        if response.status_code >= 400:
            try:
                message = response.json().get("error", {}).get("message", response.text)
            except (ValueError, AttributeError):  # not JSON, or JSON without {"error": {...}}
                message = response.text
            hint = ": its log says why" if response.status_code >= 500 else ""
            raise BackendError(
                f"the llamafile server at {self.base_url} refused the request "
                f"(HTTP {response.status_code}): {plain_text(str(message)) or 'no reason given'}{hint}"
            )
        response.encoding = "utf8"
        events, other = 0, ""
        for line in response.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data:"):
                other = other or line
                continue
            events += 1
            content = json.loads(line.removeprefix("data:").strip()).get("content", "")
            if content:
                if run_manager:
                    run_manager.on_llm_new_token(token=content)
                yield GenerationChunk(text=content)
        if not events and other:
            raise BackendError(
                f"the llamafile server at {self.base_url} did not send a completion stream (it sent "
                f"{plain_text(other, 80)!r}): is NOOK_LLM_BASE_URL a llamafile or llama.cpp llama-server?"
            )

    def _call(self, prompt: str, stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any) -> str:
        return "".join(chunk.text for chunk in self._stream(prompt, stop, run_manager, **kwargs))
