"""The answering chain: question (+ history) -> standalone question -> retrieval -> fitted context -> streamed answer.

The model calls are LCEL runnables (`prompt | llm | StrOutputParser()`); retrieval, context fitting, the answer
cache and error mapping sit around them, so the UI and the CLI get one stream of text and one result.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import Runnable

from rag.answer_cache import AnswerCache, cache_key
from rag.errors import BackendError, NookError
from rag.llms import LLMInfo
from rag.prompts import select_prompt
from rag.retrieval import Hit, SearchFilters, SearchResult

NOT_FOUND_EN = "I could not find this in your documents."
NOT_FOUND_ZH = "在你的文档中没有找到相关内容。"
_CJK = re.compile(r"[\u3400-\u9fff]")
_CITATION = re.compile(r"\[(\d{1,3})\]")
_SNIPPET_CHARS = 300
# Where a small model, having answered, starts writing the next turn itself; end-of-turn tokens of each family.
STOP_SEQUENCES = ["\nQuestion:", "\nUser:", "\nContext:", "<|im_end|>", "<|im_start|>", "<|eot_id|>", "</s>", "[INST]"]


@dataclass(frozen=True)
class Source:
    """One numbered excerpt given to the model: the answer's [n] refers to `number`."""

    number: int
    source: str
    file_name: str
    page: int | None
    heading: str
    snippet: str
    score: float
    id: str

    def label(self) -> str:
        """File name, page and heading, for display."""
        parts = [self.file_name]
        if self.page:
            parts.append(f"p. {self.page}")
        if self.heading:
            parts.append(self.heading)
        return ", ".join(parts)


@dataclass
class AnswerResult:
    """What an answer was made from and what it said."""

    question: str
    standalone_question: str
    answer: str = ""
    sources: list[Source] = field(default_factory=list)
    found: bool = True
    cached: bool = False
    cited: list[int] = field(default_factory=list)
    dropped_chunks: int = 0
    filters: SearchFilters = field(default_factory=SearchFilters)


class AnswerStream:
    """Iterate for the answer's text as it is generated; `result` is complete once iteration ends."""

    def __init__(self, pieces: Iterator[str], result: AnswerResult) -> None:
        self._pieces = pieces
        self.result = result

    def __iter__(self) -> Iterator[str]:
        collected: list[str] = []
        for piece in self._pieces:
            if piece:
                collected.append(piece)
                yield piece
        if not self.result.answer:
            self.result.answer = "".join(collected)
        self.result.cited = sorted(
            {int(n) for n in _CITATION.findall(self.result.answer) if 1 <= int(n) <= len(self.result.sources)}
        )

    def text(self) -> str:
        """Consume the stream and return the whole answer."""
        for _ in self:
            pass
        return self.result.answer


def not_found_message(question: str) -> str:
    """The "not in your documents" answer, in the language of the question."""
    return NOT_FOUND_ZH if _CJK.search(question) else NOT_FOUND_EN


def hits_to_sources(hits: Sequence[Hit]) -> list[Source]:
    """Number the hits 1..n in rank order."""
    return [
        Source(
            number=i,
            source=hit.source,
            file_name=Path(hit.source).name,
            page=hit.page,
            heading=str(hit.metadata.get("heading", "")),
            snippet=hit.text[:_SNIPPET_CHARS],
            score=hit.score,
            id=hit.id,
        )
        for i, hit in enumerate(hits, start=1)
    ]


def format_context(hits: Sequence[Hit]) -> str:
    """The numbered excerpts as the prompt shows them."""
    blocks = []
    for number, hit in enumerate(hits, start=1):
        where = Path(hit.source).name + (f", p. {hit.page}" if hit.page else "")
        blocks.append(f"[{number}] ({where})\n{hit.text.strip()}")
    return "\n\n".join(blocks)


def format_history(history: Sequence[tuple[str, str]], turns: int = 3) -> str:
    """The last few (question, answer) turns as plain text for the condensing prompt."""
    lines = []
    for question, answer in list(history)[-turns:]:
        lines.append(f"User: {question}")
        lines.append(f"Assistant: {answer}")
    return "\n".join(lines)


def token_counter(info: LLMInfo) -> Callable[[str], int]:
    """Count tokens with the model's own tokenizer where the backend has one in process, else estimate high."""
    client = getattr(info.llm, "client", None)
    tokenize = getattr(client, "tokenize", None)
    if info.backend == "llamacpp" and tokenize is not None:
        return lambda text: len(tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def estimate(text: str) -> int:
        # Over-estimates on purpose: about 3 characters a token for Latin text, one or more per CJK character.
        cjk = len(_CJK.findall(text))
        return int((len(text) - cjk) / 3 + cjk * 1.5) + 1

    return estimate


def render(prompt: Any, **values: str) -> str:
    """The prompt as the model receives it (chat messages flattened), for counting and cache keys."""
    return prompt.format(**values)


class AnswerChain:
    """Answers questions with one model; the search function and the cache are passed in."""

    def __init__(
        self,
        info: LLMInfo,
        search: Callable[[str, SearchFilters | None], SearchResult],
        n_ctx: int,
        max_tokens: int,
        params: dict[str, Any],
        cache: AnswerCache | None = None,
    ) -> None:
        self.info = info
        self.search = search
        self.n_ctx = n_ctx
        self.max_tokens = max_tokens
        self.params = params
        self.cache = cache
        self.answer_prompt = select_prompt("answer", info)
        self.condense_prompt = select_prompt("condense", info)
        llm = info.llm.bind(stop=STOP_SEQUENCES)
        self.answer_runnable: Runnable = self.answer_prompt | llm | StrOutputParser()
        self.condense_runnable: Runnable = self.condense_prompt | llm | StrOutputParser()
        self.count_tokens = token_counter(info)

    # ------------------------------------------------------------------ steps

    def standalone_question(self, question: str, history: Sequence[tuple[str, str]]) -> str:
        """The follow-up question rewritten to stand alone; the question itself when there is no history."""
        if not history:
            return question
        values = {"chat_history": format_history(history), "question": question}
        if self.count_tokens(render(self.condense_prompt, **values)) > self.n_ctx - self.max_tokens - 8:
            return question  # too long to rewrite in the window: fit_context then says whether it fits at all
        try:
            rewritten = self.condense_runnable.invoke(values)
        except Exception as exc:  # noqa: BLE001 - mapped to one user-facing error
            raise backend_error(self.info, exc) from None
        rewritten = rewritten.strip().split("\n")[0].strip()
        # A small model may ramble or answer instead; then the question as asked is the better query.
        if not rewritten or len(rewritten) > 3 * len(question) + 200:
            return question
        return rewritten

    def fit_context(self, question: str, hits: list[Hit]) -> tuple[list[Hit], str]:
        """Drop the lowest-ranked chunks until the prompt leaves room for the answer in n_ctx.

        The question and the prompt are never cut: if they alone do not fit, that is an error.
        """
        budget = self.n_ctx - self.max_tokens - 8
        kept = list(hits)
        while True:
            prompt_text = render(self.answer_prompt, context=format_context(kept), question=question)
            if self.count_tokens(prompt_text) <= budget:
                return kept, prompt_text
            if not kept:
                bare = self.count_tokens(render(self.answer_prompt, context="", question=""))
                if bare > budget:  # not the question's fault: the answer's share leaves no room for any prompt
                    raise NookError(
                        f"max_tokens ({self.max_tokens}) leaves no room for the prompt in the model's context window "
                        f"({self.n_ctx} tokens): lower max_tokens (NOOK_MAX_TOKENS) or raise n_ctx (NOOK_N_CTX)"
                    )
                raise NookError(
                    f"the question is too long for the model's context window ({self.n_ctx} tokens with "
                    f"{self.max_tokens} kept for the answer): shorten it or raise n_ctx"
                )
            kept.pop()

    # ------------------------------------------------------------------ the whole thing

    def check_server(self, timeout: float = 2.0) -> None:
        """For server backends, fail at once with one line when the server does not answer.

        Without this, a dead server is only noticed after retrieval. A server that accepts the connection but does
        not answer is given the backend's request timeout (`timeout` when it has none): it may just be busy.
        """
        base_url = getattr(self.info.llm, "base_url", None)
        if not base_url:
            return
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(base_url, timeout=self.info.timeout or timeout):
                pass
        except urllib.error.HTTPError:
            return  # it answered, even if not at "/"
        except (OSError, ValueError) as exc:
            timed_out = isinstance(exc, TimeoutError) or "timed out" in str(exc)
            raise backend_error(self.info, (TimeoutError if timed_out else ConnectionError)(str(exc))) from None

    def ask(
        self, question: str, history: Sequence[tuple[str, str]] = (), filters: SearchFilters | None = None
    ) -> AnswerStream:
        """Retrieve and start answering; iterate the returned stream for the text."""
        self.check_server()
        standalone = self.standalone_question(question, history)
        found = self.search(standalone, filters)
        result = AnswerResult(question=question, standalone_question=standalone, filters=found.filters)
        if not found.found:
            result.found = False
            result.answer = not_found_message(question)
            return AnswerStream(iter([result.answer]), result)
        kept, prompt_text = self.fit_context(standalone, found.hits)
        result.dropped_chunks = len(found.hits) - len(kept)
        result.sources = hits_to_sources(kept)
        key = cache_key(f"{self.info.backend}:{self.info.model}", {**self.params, "stop": STOP_SEQUENCES}, prompt_text)
        cached = self.cache.get(key) if self.cache else None
        if cached is not None:
            result.cached = True
            result.answer = cached
            return AnswerStream(_replay(cached), result)
        values = {"context": format_context(kept), "question": standalone}
        return AnswerStream(self._generate(values, key, result), result)

    def _generate(self, values: dict[str, str], key: str, result: AnswerResult) -> Iterator[str]:
        pieces: list[str] = []
        try:
            for piece in self.answer_runnable.stream(values):
                pieces.append(piece)
                yield piece
        except NookError:
            raise
        except Exception as exc:  # noqa: BLE001 - connection and server errors become one line
            raise backend_error(self.info, exc) from None
        answer = "".join(pieces)
        result.answer = answer
        if self.cache is not None and answer.strip():
            try:
                self.cache.put(key, answer)
            except sqlite3.Error:  # a full disk costs the cache, not the answer the user has just read
                pass


def _replay(text: str) -> Iterator[str]:
    """A cached answer streamed back in word-sized pieces."""
    yield from re.findall(r"\S+\s*|\s+", text)


def backend_error(info: LLMInfo, exc: BaseException) -> BackendError:
    """One line that says what failed and what to do; the one place where a backend's exceptions are mapped."""
    name = type(exc).__name__
    text = " ".join(str(exc).split())[:200]
    where = getattr(info.llm, "base_url", None) or info.model
    if "Timeout" in name or "timed out" in text:
        waited = f" within {info.timeout:g} s" if info.timeout else ""
        return BackendError(
            f"the {info.backend} server at {where} did not answer{waited} ({name}): it is stuck, busy or out of "
            "reach. Restart it, raise NOOK_REQUEST_TIMEOUT, or choose another backend (NOOK_LLM_BACKEND)"
        )
    if "Connect" in name or "Connection refused" in text:
        return BackendError(
            f"the {info.backend} server at {where} did not answer ({name}): is it running? "
            "Start it, or choose another backend (NOOK_LLM_BACKEND)"
        )
    status = getattr(exc, "status_code", None)  # ollama.ResponseError: the server answered with an HTTP error
    if isinstance(status, int) and status >= 400:
        reason = " ".join(re.sub(r"<[^>]*>", " ", str(getattr(exc, "error", text))).split())[:200]
        hint = ": its log says why" if status >= 500 else ""
        return BackendError(f"the {info.backend} server at {where} failed (HTTP {status}): {reason}{hint}")
    if isinstance(exc, json.JSONDecodeError) or "Decod" in name:
        return BackendError(
            f"the {info.backend} server at {where} sent a reply Nook cannot read ({name}: {text}): "
            f"is NOOK_LLM_BASE_URL a server for the {info.backend} backend? Its log may say more"
        )
    return BackendError(f"the {info.backend} backend failed while answering ({name}: {text})")
