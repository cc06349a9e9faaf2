"""What the Streamlit page shows: highlighted snippets, labels, times, session settings; no Streamlit, no LangChain."""

from __future__ import annotations

import datetime as dt
import html
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rag.config import Settings
from rag.errors import SettingsError
from rag.retrieval import keyword_tokens

_CJK_ONLY = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")
_MARKDOWN_SPECIAL = re.compile(r"[\\`*_{}\[\]()#+\-.!|~<>$:]")


# ---------------------------------------------------------------- settings for one session


def settings_with(base: Settings, **updates: Any) -> Settings:
    """A copy of `base` with the sidebar's choices, validated like any other settings (unlike `model_copy`).

    Every field is passed explicitly, so NOOK_* variables and nook.toml cannot override the choices.
    """
    values = base.model_dump()
    values.update(updates)
    try:
        return type(base)(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise SettingsError(f"invalid settings ({problems})") from None


def settings_key(settings: Settings) -> str:
    """A stable text key for caching one service per distinct settings."""
    return settings.model_dump_json()


# ---------------------------------------------------------------- highlighting


def question_terms(question: str) -> list[str]:
    """Words of the question worth highlighting: content words, and Chinese character pairs (single ones are noise)."""
    terms = {t for t in keyword_tokens(question) if len(t) >= 2}
    return sorted(terms, key=len, reverse=True)


def highlight(text: str, question: str) -> str:
    """The text as safe HTML (escaped), with the question's words wrapped in <mark>; newlines become <br>.

    Matching runs on the raw text and each piece is escaped afterwards, so an entity like `&amp;` is never split.
    """
    terms = question_terms(question)
    pieces: list[str] = []
    if terms:
        latin = [re.escape(t) for t in terms if not _CJK_ONLY.fullmatch(t)]
        cjk = [re.escape(t) for t in terms if _CJK_ONLY.fullmatch(t)]
        alternatives = []
        if latin:
            alternatives.append(r"(?<![A-Za-z0-9])(?:" + "|".join(latin) + r")(?![A-Za-z0-9])")
        if cjk:
            alternatives.append("|".join(cjk))
        pattern = re.compile("|".join(alternatives), re.IGNORECASE)
        last = 0
        for match in pattern.finditer(text):
            pieces.append(html.escape(text[last : match.start()]))
            pieces.append(f"<mark>{html.escape(match.group(0))}</mark>")
            last = match.end()
        pieces.append(html.escape(text[last:]))
    else:
        pieces.append(html.escape(text))
    return re.sub(r"\s*\n\s*", "<br>", "".join(pieces).strip())


def snippet_block(text: str, question: str) -> str:
    """A snippet as one raw-HTML block for st.markdown: inside a <div> with no blank line, Markdown does not apply."""
    return f'<div class="nook-snippet">{highlight(text, question)}</div>'


def md_escape(text: str) -> str:
    """Text shown through st.markdown as itself: Markdown, LaTeX and Streamlit's :color[...] syntax neutralised."""
    return _MARKDOWN_SPECIAL.sub(r"\\\g<0>", text)


# ---------------------------------------------------------------- labels


def source_title(source: Any) -> str:
    """The title of a rag.chain.Source, like "[n] file.md, p. 2"."""
    page = f", p. {source.page}" if source.page else ""
    return f"[{source.number}] {source.file_name}{page}"


def relative_time(timestamp: float | None, now: float | None = None) -> str:
    """How long ago, like "just now", "5 min ago", "3 h ago" or "2 days ago"; the date for older times."""
    if not timestamp:
        return "never"
    seconds = max(0.0, (now if now is not None else time.time()) - timestamp)
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    if seconds < 7 * 86400:
        days = int(seconds // 86400)
        return f"{days} day{'s' if days > 1 else ''} ago"
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d")


def human_size(size: float) -> str:
    """Bytes as B, KB or MB."""
    if size < 1024:
        return f"{int(size)} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def model_label(entry: Any) -> str:
    """One line for the model picker, from a rag.discovery.ModelEntry."""
    parts = [entry.name, f"{entry.size_mb:.0f} MB"]
    if entry.quantisation and entry.quantisation != "?":
        parts.append(entry.quantisation)
    if entry.prompt_family and entry.prompt_family != "?":
        parts.append(entry.prompt_family)
    label = " · ".join(parts)
    return label if entry.fits_in_memory else f"{label} · may not fit in memory"


def yyyymmdd(day: dt.date) -> int:
    """A date as the YYYYMMDD integer the search filters use."""
    return day.year * 10000 + day.month * 100 + day.day


def common_root(paths: Sequence[str]) -> str:
    """The deepest folder shared by all the paths ("" for none)."""
    if not paths:
        return ""
    try:
        return os.path.commonpath([str(Path(p)) for p in paths])
    except ValueError:
        return ""


def short_folder(folder: str, root: str) -> str:
    """A folder shown from the common root's own name on ("samples/diary"), for display."""
    if root and (folder == root or folder.startswith(root.rstrip(os.sep) + os.sep)):
        return os.path.relpath(folder, os.path.dirname(root)) if folder != root else os.path.basename(root) or root
    return folder


def eval_caption(report: Any) -> str:
    """One line about an evaluation report: which set, when, with what."""
    skipped = f", {len(report.skipped)} skipped" if report.skipped else ""
    return (
        f"{Path(report.set_path).name}: {report.overall.questions} questions{skipped}, {report.created}, "
        f"{report.embedding_model}, k={report.k}, collection {report.collection}"
    )


def eval_rows(report: Any) -> list[dict[str, Any]]:
    """The report's scores as table rows, overall first, then by language and by tag."""
    groups = [("all", report.overall)]
    groups += [(name, s) for name, s in sorted(report.by_language.items())]
    groups += [(f"tag: {name}", s) for name, s in sorted(report.by_tag.items())]
    rows = []
    for name, scores in groups:
        row: dict[str, Any] = {"group": name, "questions": scores.questions}
        if scores.chunk_hit_at_k is not None:
            row[f"chunk hit@{report.k}"] = round(scores.chunk_hit_at_k, 3)
        row[f"doc hit@{report.k}"] = round(scores.doc_hit_at_k, 3)
        row["MRR"] = round(scores.mrr, 3)
        row["nDCG@10"] = round(scores.ndcg_at_10, 3)
        rows.append(row)
    return rows
