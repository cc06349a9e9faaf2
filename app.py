"""Nook's page: chat with your own documents, with sources. Layout and wiring only; the work is in rag.service."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rag.privacy import enforce_offline

enforce_offline()  # before Streamlit, Chroma or sentence-transformers are imported

import streamlit as st  # noqa: E402

from rag import ui  # noqa: E402
from rag.config import Settings, load_settings  # noqa: E402
from rag.errors import NookError  # noqa: E402
from rag.retrieval import SearchFilters  # noqa: E402
from rag.service import (  # noqa: E402
    NookService,
    available_backends,
    available_models,
    build_embedder,
    collection_model,
    supported_extensions,
)

GGUF_BACKENDS = ("llamacpp", "gpt4all")
CONTEXT_SIZES = (512, 1024, 2048, 4096, 8192, 16384, 32768)
DOCUMENTS_SHOWN = 100
STYLE = """<style>
.nook-snippet { font-size: 0.88rem; line-height: 1.45; opacity: 0.9; border-left: 3px solid rgba(91, 91, 214, 0.35);
  padding: 0.1rem 0 0.1rem 0.75rem; margin: -0.4rem 0 0.9rem 0; }
.nook-snippet mark { background: rgba(255, 200, 0, 0.38); color: inherit; padding: 0 0.12em; border-radius: 3px; }
</style>"""

st.set_page_config(
    page_title="Nook", page_icon=":material/menu_book:", layout="centered", initial_sidebar_state="expanded"
)
st.html(STYLE)


# ---------------------------------------------------------------- shared resources (one per process, all sessions)


@st.cache_resource(show_spinner=False)
def shared_embedder(model: str, batch_size: int, precision: str, _settings: Settings) -> Any:
    """One embedding model per name, shared by every service and session; it loads while the user types."""
    embedder = build_embedder(_settings)
    embedder.warm()
    return embedder


@st.cache_resource(show_spinner=False, max_entries=6)
def service_for(key: str, _settings: Settings) -> NookService:
    """One NookService per distinct settings; it serialises generation itself, so sessions may share it."""
    s = _settings
    return NookService(s, embedder=shared_embedder(s.embedding_model, s.embedding_batch_size, s.embedding_precision, s))


@st.cache_data(ttl=60, show_spinner=False)
def local_models(key: str, _settings: Settings) -> list[Any]:
    """The model picker's entries; rescanned at most once a minute."""
    return available_models(_settings)


@st.cache_data(ttl=30, show_spinner=False)
def built_with(key: str, _settings: Settings) -> str | None:
    """The embedding model the chosen collection was built with; read again at most every 30 s."""
    return collection_model(_settings)


def service(settings: Settings) -> NookService:
    """The shared service for these settings."""
    return service_for(ui.settings_key(settings), settings)


def attempt(action: Callable[..., Any], *args: Any, fallback: Any = None, where: Any = st, **kwargs: Any) -> Any:
    """Run a service call; a NookError becomes one st.error line and the page goes on with `fallback`."""
    try:
        return action(*args, **kwargs)
    except NookError as exc:
        where.error(str(exc), icon=":material/error:")
        return fallback


def describe(field: str) -> str:
    """The settings field's own description, as a widget's help."""
    return Settings.model_fields[field].description or ""


# ---------------------------------------------------------------- session state and callbacks

state = st.session_state
state.setdefault("messages", [])
state.setdefault("notices", [])
state.setdefault("uploader_key", 0)


def new_chat() -> None:
    """Forget this session's conversation."""
    state.messages = []


def notify(kind: str, text: str) -> None:
    """Queue a one-line message for the next run of the page (st.success, st.warning or st.error)."""
    state.notices.append((kind, text))


def remove_document(svc: NookService, path: str) -> None:
    """Button callback: take one file out of the index."""
    try:
        chunks = svc.remove_document(path)
    except NookError as exc:
        notify("error", str(exc))
    else:
        notify("success", f"Removed {Path(path).name} ({chunks} chunks) from the index.")


def run_sync(svc: NookService, paths: list[Path]) -> None:
    """Sync files or folders with a progress bar, queue the outcome, and rerun so stats and lists are fresh."""
    bar = st.progress(0.0, text="Reading files…")

    def on_progress(done: int, total: int, chunks: int) -> None:
        bar.progress(done / total if total else 1.0, text=f"{done} of {total} files read · {chunks} chunks embedded")

    try:
        report = svc.sync(paths, on_progress=on_progress)
    except NookError as exc:
        notify("error", str(exc))
    else:
        notify("success", report.summary())
        for path, reason in report.failures[:5]:
            notify("warning", f"{Path(path).name}: {reason}")
        if report.skipped_files:
            names = ", ".join(Path(p).name for p, _ in report.skipped_files[:5])
            notify("warning", f"skipped {len(report.skipped_files)} file(s) Nook cannot read: {names}")
    st.rerun()


# ---------------------------------------------------------------- sidebar: settings for this session

try:
    base = load_settings()
except NookError as exc:
    st.error(f"{exc}. Fix nook.toml or the NOOK_* variables, then reload the page.", icon=":material/error:")
    st.stop()

overrides: dict[str, Any] = {}
with st.sidebar:
    st.markdown("## :material/menu_book: Nook")
    st.button("New chat", icon=":material/edit_square:", on_click=new_chat, type="primary", width="stretch")

    collections = attempt(service(base).list_collections, fallback=[base.collection])
    overrides["collection"] = st.selectbox(
        "Collection",
        collections,
        index=collections.index(base.collection) if base.collection in collections else 0,
        key="collection",
        accept_new_options=True,
        help="Each collection is a separate set of documents. Type a new name to start one.",
    )

    st.markdown("##### Model")
    backends = available_backends()
    backend = st.selectbox(
        "Backend",
        backends,
        index=backends.index(base.llm_backend) if base.llm_backend in backends else 0,
        key="backend",
        help=describe("llm_backend"),
    )
    overrides["llm_backend"] = backend
    if backend in GGUF_BACKENDS or backend == "ollama":
        models_key = f"{base.data_dir}|{backend}|{base.llm_base_url}|{base.n_ctx}"
        wanted = "ollama" if backend == "ollama" else "llamacpp"
        found = local_models(models_key, ui.settings_with(base, llm_backend=backend))
        entries = [e for e in found if e.backend == wanted]
        labels = {(e.name if backend == "ollama" else e.path): ui.model_label(e) for e in entries}
        if base.llm_model and base.llm_model not in labels:
            labels = {base.llm_model: Path(base.llm_model).name, **labels}
        if labels:
            options = list(labels)
            default = options.index(base.llm_model) if base.llm_model in options else 0
            chosen = st.selectbox(
                "Model", options, index=default, format_func=labels.__getitem__, key=f"model-{backend}"
            )
            if chosen != options[default]:  # the default keeps the configured value, so its service is reused
                overrides["llm_model"] = chosen
        elif backend == "ollama":
            st.caption("No Ollama server answered; start `ollama serve`, or type a model name.")
            overrides["llm_model"] = st.text_input("Model name", value=base.llm_model or "", key="ollama-model") or None
        else:
            st.caption(f"No GGUF model found: put .gguf files in {base.data_dir / 'models'}.")
    elif backend == "llamafile":
        st.caption(f"Answers come from the llamafile server at {base.llm_base_url or 'http://127.0.0.1:8080'}.")
    elif backend == "fake":
        st.caption("Test backend: a canned answer, no model is loaded.")

    with st.expander("Generation", icon=":material/tune:"):
        overrides["temperature"] = st.slider(
            "Temperature", 0.0, 2.0, float(base.temperature), 0.05, key="temperature", help=describe("temperature")
        )
        overrides["top_p"] = st.slider("Top-p", 0.05, 1.0, float(base.top_p), 0.05, key="top_p", help=describe("top_p"))
        overrides["top_k"] = st.number_input("Top-k", 0, 1000, base.top_k, 1, key="top_k", help=describe("top_k"))
        overrides["repeat_penalty"] = st.slider(
            "Repeat penalty", 0.5, 2.0, float(base.repeat_penalty), 0.05, key="repeat_penalty",
            help=describe("repeat_penalty"),
        )  # fmt: skip
        overrides["max_tokens"] = st.number_input(
            "Max tokens", 1, 32768, base.max_tokens, 16, key="max_tokens", help=describe("max_tokens")
        )
        overrides["n_ctx"] = st.select_slider(
            "Context size", sorted({*CONTEXT_SIZES, base.n_ctx}), base.n_ctx, key="n_ctx", help=describe("n_ctx")
        )

    with st.expander("Retrieval", icon=":material/manage_search:"):
        overrides["retrieval_k"] = st.slider(
            "Chunks of context (k)", 1, max(20, base.retrieval_k), base.retrieval_k, key="k",
            help=describe("retrieval_k"),
        )  # fmt: skip
        overrides["keyword_search"] = st.toggle(
            "Keyword search (BM25)", base.keyword_search, key="keyword", help=describe("keyword_search")
        )
        filters_box = st.container()

    stats_box = st.container()

# No model configured: each collection keeps the one it was built with.
if "embedding_model" not in base.model_fields_set:
    chosen = attempt(ui.settings_with, base, collection=overrides["collection"], fallback=base, where=st.sidebar)
    key = f"{chosen.data_dir}|{chosen.chroma_url}|{chosen.collection}"
    built = attempt(built_with, key, chosen, fallback=None, where=st.sidebar)
    overrides["embedding_model"] = built or base.embedding_model
settings = attempt(ui.settings_with, base, **overrides, fallback=base, where=st.sidebar)
nook = service(settings)
documents = attempt(nook.documents, fallback=[])
folder_root = ui.common_root([d.folder for d in documents])

with filters_box:
    folders = st.multiselect(
        "Only these folders",
        sorted({d.folder for d in documents}),
        key="folders",
        format_func=lambda folder: ui.short_folder(folder, folder_root),
        placeholder="All folders",
    )
    date_range: tuple[dt.date, ...] = ()
    if st.toggle("Only documents dated…", key="by_date"):
        today = dt.date.today()
        picked = st.date_input(
            "Dated between", (today.replace(month=1, day=1), today), min_value=dt.date(1900, 1, 1), key="dates"
        )
        date_range = tuple(picked) if isinstance(picked, tuple) else (picked,)
filters = SearchFilters(
    folders=tuple(folders),
    date_from=ui.yyyymmdd(date_range[0]) if date_range else None,
    date_to=ui.yyyymmdd(date_range[-1]) if date_range else None,
)

with stats_box:
    st.markdown("##### Index")
    stats = attempt(nook.stats)
    if stats is not None:
        documents_col, chunks_col = st.columns(2)
        documents_col.metric("Documents", f"{stats.documents:,}")
        chunks_col.metric("Chunks", f"{stats.chunks:,}")
        failed = f" · {stats.failed} failed" if stats.failed else ""
        st.caption(f"Last sync {ui.relative_time(stats.last_sync)}{failed}  \nEmbeddings: {stats.embedding_model}")
    with st.expander("Retrieval quality", icon=":material/fact_check:"):
        report = attempt(nook.last_eval_report)
        if report is None:
            st.caption("Measure retrieval on your own questions: `python -m rag eval questions.jsonl` "
                       "(one {\"question\", \"answer\"} object per line). The last report shows here.")
        else:
            st.caption(ui.eval_caption(report))
            st.dataframe(ui.eval_rows(report), hide_index=True, width="stretch")


# ---------------------------------------------------------------- main: documents


def documents_panel() -> None:
    """Upload files, sync a folder, and the list of indexed documents with a remove button each."""
    label = f"Documents · {len(documents)} in {settings.collection}"
    with st.expander(label, expanded=not documents, icon=":material/folder_open:"):
        upload_tab, folder_tab, list_tab = st.tabs(["Upload files", "Sync a folder", "Indexed documents"])
        with upload_tab:
            limit_mb = float(st.get_option("server.maxUploadSize"))
            files = st.file_uploader(
                "Add files to the index",
                type=[ext.lstrip(".") for ext in supported_extensions()],
                accept_multiple_files=True,
                key=f"uploader-{state.uploader_key}",
                help=f"Up to {limit_mb:g} MB each; a copy is kept in {nook.uploads_dir}.",
            )
            if files and st.button(f"Index {len(files)} file(s)", type="primary", key="index-uploads"):
                saved = []
                for file in files:
                    try:
                        saved.append(nook.save_upload(file.name, file.getvalue(), max_mb=limit_mb))
                    except NookError as exc:
                        notify("error", str(exc))
                state.uploader_key += 1  # a fresh, empty uploader after the run
                if saved:
                    run_sync(nook, saved)
                st.rerun()
        with folder_tab:
            folder = st.text_input(
                "Folder or file on this computer",
                key="sync-path",
                placeholder="~/Documents/notes",
                help="New and changed files are indexed, deleted ones leave the index. Nothing leaves this computer.",
            )
            if st.button("Sync", type="primary", key="sync", disabled=not folder.strip()):
                run_sync(nook, [Path(folder.strip()).expanduser()])
        with list_tab:
            if not documents:
                st.caption("Nothing is indexed yet: upload files or sync a folder.")
                return
            query = st.text_input("Find a document", key="doc-filter", placeholder="Filter by name or folder")
            shown = [d for d in documents if query.lower() in d.path.lower()]
            for doc in shown[:DOCUMENTS_SHOWN]:
                name_col, info_col, button_col = st.columns([5, 4, 1], vertical_alignment="center")
                where = ui.md_escape(ui.short_folder(doc.folder, folder_root))
                name_col.markdown(f"**{ui.md_escape(doc.file_name)}**  \n:gray[{where}]")
                info_col.caption(
                    f"{doc.chunks} chunks · {ui.human_size(doc.size)} · indexed {ui.relative_time(doc.ingested_at)}"
                )
                button_col.button(
                    "",
                    icon=":material/delete:",
                    key=f"remove:{doc.path}",
                    help=f"Remove {doc.file_name} from the index (the file itself stays where it is)",
                    on_click=remove_document,
                    args=(nook, doc.path),
                )
            if len(shown) > DOCUMENTS_SHOWN:
                st.caption(f"…and {len(shown) - DOCUMENTS_SHOWN} more: filter by name to find them.")
            for path, reason in list(attempt(nook.failures, fallback={}).items())[:10]:
                st.warning(f"{Path(path).name} was not indexed: {reason}", icon=":material/warning:")


# ---------------------------------------------------------------- main: chat


def render_not_found(text: str) -> None:
    """The "not in your documents" state: distinct from an answer, and says what to try."""
    st.info(
        f"**{text}**  \nNothing indexed matched closely enough, so no answer was made up. "
        "Try other words, widen the folder or date filters, or add the documents that hold the answer.",
        icon=":material/search_off:",
    )


def render_sources(message: dict[str, Any]) -> None:
    """The sources under an answer, numbered like its [n] markers; the snippets highlight the question's words."""
    sources = message["sources"]
    if not sources:
        return
    cited = set(message["cited"])
    titles = [
        f"**{ui.md_escape(ui.source_title(s))}**" if s.number in cited else ui.md_escape(ui.source_title(s))
        for s in sources
    ]
    st.caption("Sources: " + " · ".join(titles))
    with st.expander(f"Excerpts from {len(sources)} sources", icon=":material/format_quote:"):
        for s in sources:
            heading = f" · {ui.md_escape(s.heading)}" if s.heading else ""
            badge = " :green-badge[cited]" if s.number in cited else ""
            st.markdown(f"**{ui.md_escape(ui.source_title(s))}**{heading} :gray[· score {s.score:.2f}]{badge}")
            st.markdown(ui.snippet_block(s.snippet, message["question"]), unsafe_allow_html=True)


def render_message(message: dict[str, Any]) -> None:
    """One turn of the conversation as it was shown when it happened."""
    with st.chat_message(message["role"]):
        if message["role"] == "user":
            st.markdown(message["content"])
        elif message.get("error"):
            if message["content"]:
                st.markdown(message["content"])
            st.error(message["error"], icon=":material/error:")
        elif not message["found"]:
            render_not_found(message["content"])
        else:
            st.markdown(message["content"])
            render_sources(message)
            st.caption(message["meta"])


def answer(question: str, history: list[tuple[str, str]]) -> dict[str, Any]:
    """Stream the answer into the current chat message and return the turn to keep in the history."""
    reply: dict[str, Any] = {"role": "assistant", "question": question, "content": "", "found": True}
    reply.update(sources=[], cited=[], error=None, meta="")
    started = time.perf_counter()
    received: list[str] = []
    try:
        stream = nook.ask(question, history=history, filters=filters)
        pieces = iter(stream)
        with st.spinner("Searching your documents…"):
            first = next(pieces, None)  # retrieval, and the model's first token, happen here
        result = stream.result
        if result is not None and not result.found:
            for _ in pieces:  # drains the one-piece stream, so the result is complete
                pass
            reply.update(found=False, content=result.answer)
            render_not_found(result.answer)
            return reply

        def collect() -> Iterator[str]:
            for piece in [first] if first is not None else []:
                received.append(piece)
                yield piece
            for piece in pieces:
                received.append(piece)
                yield piece

        st.write_stream(collect())
    except NookError as exc:
        reply.update(error=str(exc), content="".join(received))
        st.error(str(exc), icon=":material/error:")
        return reply
    reply.update(content=result.answer or "".join(received), sources=result.sources, cited=result.cited)
    if not reply["content"].strip():
        st.warning("The model returned an empty answer: ask again, raise Max tokens, or pick another model.")
    info = nook.llm_info
    meta = [info.backend, Path(str(info.model)).name, f"{time.perf_counter() - started:.1f} s"]
    if result.cached:
        meta.append("from the answer cache")
    if result.dropped_chunks:
        meta.append(f"{result.dropped_chunks} chunks left out to fit the context window")
    reply["meta"] = " · ".join(meta)
    render_sources(reply)
    st.caption(reply["meta"])
    return reply


st.title(":material/menu_book: Nook", anchor=False)
st.caption("Ask your own documents. Everything stays on this computer.")
while state.notices:
    kind, text = state.notices.pop(0)
    getattr(st, kind)(text)
documents_panel()

for message in state.messages:
    render_message(message)
hint = st.empty()
if not state.messages:
    if documents:
        scope = "" if filters.is_empty() else " (filtered in the sidebar)"
        hint.markdown(
            f":gray[Ask anything about the {len(documents)} documents in **{ui.md_escape(settings.collection)}**"
            f"{scope}. Answers cite their sources like [1].]"
        )
    else:
        hint.markdown(":gray[Add documents above, then ask about them here.]")

if question := st.chat_input("Ask about your documents…"):
    hint.empty()
    earlier = [
        (m["question"], m["content"])
        for m in state.messages
        if m["role"] == "assistant" and m["found"] and not m["error"] and m["content"]
    ]
    state.messages.append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.markdown(question)
    with st.chat_message("assistant"):
        state.messages.append(answer(question, earlier))
