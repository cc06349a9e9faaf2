"""Several sessions asking at once through one shared NookService (as Streamlit's cache_resource shares it).

The sync tests hold a sync half way (in its progress callback) until every session has asked a question there, so
those answers are made while the collection is half written and the keyword snapshot is from before the sync; the
other questions overlap the sync as they happen to.
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ingest.manifest import Manifest
from ingest.pipeline import IngestPipeline, SyncReport
from rag.chain import not_found_message
from rag.config import Settings
from rag.service import NookService
from rag.store import iter_ids
from tests.conftest import ROOT, SAMPLES
from tests.integration.helpers import make_corpus

pytestmark = pytest.mark.slow

QUESTIONS = [
    "What is my sourdough starter called?",
    "How many links does the bike chain have now?",
    "What is the studio cat called?",
    "How much is the rent for the Marlow Road flat?",
    "When is my first physio appointment after the ankle sprain?",
    "Which train did I take to Changsha?",
    "What did I write in March 2024?",
    "What does the newsletter say about the street party?",
]


def test_eight_sessions_asking_at_once_all_get_answers(tmp_path: Path, real_embedder) -> None:
    settings = Settings(data_dir=tmp_path / "data", max_tokens=8, n_ctx=2048, retrieval_k=2, answer_cache=False)
    IngestPipeline(settings, real_embedder).sync([SAMPLES])
    service = NookService(settings, embedder=real_embedder)  # the real bundled model, loaded once, shared

    def session(question: str) -> tuple[str, list[str], int]:
        stream = service.ask(question)
        pieces = list(stream)
        return "".join(pieces), [s.file_name for s in stream.result.sources], len(pieces)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(session, QUESTIONS))
    assert len(results) == 8
    for question, (answer, sources, _) in zip(QUESTIONS, results, strict=True):
        assert answer.strip(), question
        assert sources, question
    assert "sourdough.md" in results[0][1]
    assert "bike-maintenance-log.pdf" in results[1][1]


# ---------------------------------------------------------------- sessions asking while a sync writes


SESSIONS = 8
WAIT = 300.0  # seconds any thread waits for another before the test gives up on it
SAMPLE_QUESTIONS = [
    json.loads(line)
    for line in (ROOT / "data" / "sample-questions.jsonl").read_text(encoding="utf-8").splitlines()
    if line.strip()
]
# Up to 24 questions, 2 or 3 per session: English and Chinese, lexical, paraphrased and cross-language, about every
# kind of file; the last one finds nothing above the relevance floor before the sync.
ASKED = [q["question"] for q in SAMPLE_QUESTIONS[8:32]]
# Sample notes that no generated note copies (make_corpus reuses the paragraphs of the .md notes and the bike PDF),
# so these stay the right sources however far the sync has got.
KNOWN_SOURCES = {
    "When were the tomato seeds sown indoors for the garden?": "garden-plan-2024.docx",
    "How much money did the Marlow Road street party raise?": "marlow-road-newsletter.html",
    "What should I eat on the morning of the race?": "running-plan.rst",
    "药箱里的布洛芬有效期到什么时候？": "家庭药箱.txt",
    "空气净化器的滤网多久换一次，换什么型号？": "空气净化器说明书.pdf",
}
MARKER_FILE = "zz-lighthouse.md"  # sorted last: the sync's last file
MARKER_NOTE = "# The lighthouse\n\nThe lighthouse keeper's parrot is called Quillofax; it eats dried apricots.\n"
MARKER_QUESTION = "What is the lighthouse keeper's parrot called?"
MILL_NOTE = "# Mill walk {n}\n\nWalk {n}: the weathervane on the old mill at Quorvalis points north-east.\n"
MILL_QUESTION = "Where is the weathervane at Quorvalis?"  # only the mill notes hold these words


@dataclass
class Answered:
    """One question a session asked, and what came back."""

    session: int
    turn: int
    question: str
    text: str
    found: bool
    sources: list[str]  # full paths, best first
    finished: float  # time.monotonic()

    @property
    def file_names(self) -> list[str]:
        return [Path(s).name for s in self.sources]


@dataclass
class Overlap:
    """What the sessions and the sync did."""

    answers: list[Answered] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    report: SyncReport | None = None
    sync_finished: float = 0.0
    chunks_at_gate: int | None = None  # chunks in Chroma when the sync stopped half way; None: it never did


@pytest.fixture(scope="module")
def default_embedder() -> Any:
    """The default embedding model (multilingual-use-v3), loaded once for this module."""
    from rag.embeddings import load_embedder

    return load_embedder(Settings().embedding_model)


def sessions_ask_during_sync(
    service: NookService, folder: Path, questions: list[list[str]], gate: Callable[[int, int, int], bool]
) -> Overlap:
    """Sync `folder` into the service's collection in one thread while each session asks its questions in another.

    Session i asks questions[i] in turn: the first once the sync has read its first file; the second once the sync
    reaches its gate, the first progress report for which gate(files done, files total, chunks in Chroma) holds, where
    the sync waits until every session has its second answer; the rest at once.
    """
    outcome = Overlap()
    guard = threading.Lock()
    first_file, at_gate, second_turn_done = threading.Event(), threading.Event(), threading.Event()
    second_answers = 0
    collection = service.searcher.client.get_collection(service.settings.collection)

    def record_error(where: str) -> None:
        with guard:
            outcome.errors.append(f"{where}:\n{traceback.format_exc()}")

    def on_progress(done: int, total: int, _chunks: int) -> None:
        first_file.set()
        if at_gate.is_set() or not gate(done, total, collection.count()):
            return
        outcome.chunks_at_gate = collection.count()
        at_gate.set()
        if not second_turn_done.wait(WAIT):
            raise TimeoutError(f"the sessions' second questions were not answered within {WAIT:g} s")

    def sync() -> None:
        try:
            outcome.report = service.sync([folder], on_progress=on_progress)
        except Exception:  # noqa: BLE001 - recorded, then asserted on
            record_error("sync")
        finally:
            outcome.sync_finished = time.monotonic()
            first_file.set()  # a sync that failed early or never reached its gate must not leave the sessions waiting
            at_gate.set()

    def session(number: int, asked: list[str]) -> None:
        nonlocal second_answers
        for turn, question in enumerate(asked, start=1):
            if turn <= 2 and not (first_file if turn == 1 else at_gate).wait(WAIT):
                with guard:
                    outcome.errors.append(f"session {number} waited in vain to ask {question!r}")
                return
            try:
                stream = service.ask(question)
                text = stream.text()
                result = stream.result
                with guard:
                    outcome.answers.append(
                        Answered(
                            number, turn, question, text, result.found, [s.source for s in result.sources],
                            time.monotonic(),
                        )
                    )  # fmt: skip
            except Exception:  # noqa: BLE001 - recorded, then asserted on
                record_error(f"session {number} asking {question!r}")
            if turn == 2:
                with guard:
                    second_answers += 1
                    if second_answers == len(questions):
                        second_turn_done.set()

    # Daemon threads: an ask that never returns fails the test below instead of hanging the test run.
    threads = [threading.Thread(target=sync, name="sync", daemon=True)]
    threads += [
        threading.Thread(target=session, args=(number, asked), name=f"session-{number}", daemon=True)
        for number, asked in enumerate(questions)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 2 * WAIT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [thread.name for thread in threads if thread.is_alive()]
    assert not stuck, f"never returned: {stuck}; errors so far: {outcome.errors}"
    return outcome


def per_session(questions: list[str]) -> list[list[str]]:
    """Deal the questions out to SESSIONS sessions, so that the sessions' first questions all differ."""
    return [questions[number::SESSIONS] for number in range(SESSIONS)]


def assert_properly_answered(answer: Answered) -> None:
    """A non-empty answer with its sources, or the not-found message with none."""
    if answer.found:
        assert answer.text.strip(), answer
        assert answer.sources, answer
    else:
        assert answer.text == not_found_message(answer.question), answer
        assert not answer.sources, answer


def assert_index_consistent(service: NookService) -> set[str]:
    """Chroma holds exactly the chunk ids the manifest claims, none twice, and no run is left dirty; its ids."""
    s = service.settings
    ids = list(iter_ids(service.searcher.client.get_collection(s.collection)))
    with Manifest(s.manifest_path, s.store_key, s.collection) as manifest:
        records = manifest.files()
        dirty = manifest.is_dirty()
    claimed = [cid for record in records.values() for cid in record.chunk_ids]
    assert len(ids) == len(set(ids)), "Chroma holds an id twice"
    assert len(claimed) == len(set(claimed)), "two manifest rows claim one chunk"
    assert set(ids) == set(claimed), (
        f"{len(set(ids) - set(claimed))} chunks in Chroma no file claims, "
        f"{len(set(claimed) - set(ids))} claimed chunks missing from Chroma"
    )
    assert not dirty
    return set(ids)


@pytest.mark.parametrize(
    ("backend", "turns", "k"),
    # The bundled model prefills every prompt on the CPU: fewer, shorter prompts keep its run to a few minutes.
    [("fake", 3, 3), ("llamacpp", 2, 1)],
    ids=["fake", "llamacpp"],
)
def test_eight_sessions_get_their_answers_while_a_sync_writes_a_new_folder_into_the_same_collection(
    tmp_path: Path, default_embedder: Any, backend: str, turns: int, k: int
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", llm_backend=backend, max_tokens=8, n_ctx=2048, retrieval_k=k, answer_cache=False
    )
    service = NookService(settings, embedder=default_embedder)  # one service for all sessions, as the page shares it
    service.sync([SAMPLES])
    sample_chunks = service.stats().chunks
    asked = ASKED[-SESSIONS * turns :]
    service.ask(asked[0]).text()  # the model is loaded and the keyword snapshot built before the sessions start
    # About 320 chunks: the sync embeds them in batches of 128, storing each batch while it embeds the next, so the
    # first batch is in Chroma from the second batch on, with files still to read.
    folder = make_corpus(tmp_path / "more notes", 80)
    (folder / MARKER_FILE).write_text(MARKER_NOTE, encoding="utf-8")
    files_in_folder = len(list(folder.iterdir()))

    outcome = sessions_ask_during_sync(
        service,
        folder,
        per_session(asked),
        # Half way: some of the new chunks are in Chroma, not all.
        gate=lambda done, total, chunks: done < total and chunks > sample_chunks,
    )

    assert not outcome.errors, "\n".join(outcome.errors)
    assert outcome.report is not None
    assert (outcome.report.new, outcome.report.failed) == (files_in_folder, 0), outcome.report.summary()
    # Every question answered, each exactly once.
    assert sorted(a.question for a in outcome.answers) == sorted(asked)
    for answer in outcome.answers:
        assert_properly_answered(answer)
    # The answers really overlapped the sync: a whole turn was answered with the new folder half written.
    final_chunks = service.stats().chunks
    assert outcome.chunks_at_gate is not None, "the sync never had part of the folder in Chroma"
    assert sample_chunks < outcome.chunks_at_gate < final_chunks
    answered_during_sync = [a for a in outcome.answers if a.finished < outcome.sync_finished]
    assert len(answered_during_sync) >= SESSIONS
    assert {a.turn for a in answered_during_sync} >= {1, 2}
    # The right sample notes, however far the sync had got.
    for answer in outcome.answers:
        if answer.question in KNOWN_SOURCES:
            assert KNOWN_SOURCES[answer.question] in answer.file_names, answer
    assert len({a.question for a in outcome.answers} & set(KNOWN_SOURCES)) >= 3

    # Afterwards the index is consistent, and the same service sees the finished sync without a restart.
    chroma_ids = assert_index_consistent(service)
    assert len(chroma_ids) == final_chunks
    assert set(service.searcher.keyword_index().ids) == chroma_ids
    top = service.search(MARKER_QUESTION).hits[0]
    assert Path(top.source).name == MARKER_FILE and "Quillofax" in top.text
    stream = service.ask(MARKER_QUESTION)
    assert stream.text().strip()
    assert stream.result.sources[0].file_name == MARKER_FILE


def test_sessions_never_fail_or_cite_a_deleted_note_while_a_sync_replaces_and_deletes_notes(
    tmp_path: Path, default_embedder: Any
) -> None:
    settings = Settings(data_dir=tmp_path / "data", llm_backend="fake", retrieval_k=3, answer_cache=False)
    service = NookService(settings, embedder=default_embedder)
    folder = make_corpus(tmp_path / "more notes", 16)
    for number in range(4):
        (folder / f"mill-{number}.md").write_text(MILL_NOTE.format(n=number), encoding="utf-8")
    service.sync([SAMPLES])
    service.sync([folder])
    assert Path(service.search(MILL_QUESTION).hits[0].source).name.startswith("mill-")  # the snapshot holds them
    notes = sorted(folder.glob("note-*.md"))
    deleted = [*folder.glob("mill-*.md"), *notes[:4]]
    for path in deleted:
        path.unlink()
    for path in notes[4:10]:
        path.write_text(f"# {path.stem}, rewritten\n\nOnly the weather today: grey, then rain.\n", encoding="utf-8")
    # Each session asks about the deleted mill notes while the sync waits at its first file: their chunks have left
    # Chroma, but the keyword snapshot (from the last finished sync) still ranks them first.
    md_questions = [q["question"] for q in SAMPLE_QUESTIONS if q["source"].endswith(".md")]
    questions = [[md_questions[n % len(md_questions)], MILL_QUESTION, md_questions[-1 - n]] for n in range(SESSIONS)]

    outcome = sessions_ask_during_sync(service, folder, questions, gate=lambda done, total, chunks: done < total)

    assert not outcome.errors, "\n".join(outcome.errors)
    assert outcome.report is not None
    report = outcome.report
    assert (report.deleted, report.changed, report.failed) == (len(deleted), 6, 0), report.summary()
    assert outcome.chunks_at_gate is not None
    assert len(outcome.answers) == 3 * SESSIONS
    gone = {str(path) for path in deleted}
    for answer in outcome.answers:
        assert_properly_answered(answer)
        assert not gone & set(answer.sources), f"{answer.question!r} cited a deleted note: {answer.sources}"
    assert sum(a.turn == 2 and a.finished < outcome.sync_finished for a in outcome.answers) == SESSIONS

    chroma_ids = assert_index_consistent(service)
    assert set(service.searcher.keyword_index().ids) == chroma_ids
    assert not gone & {d.path for d in service.documents()}
    assert all(not Path(h.source).name.startswith("mill-") for h in service.search(MILL_QUESTION).hits)
