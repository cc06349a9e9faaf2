"""The Streamlit page, driven by AppTest: chat, sources, not-found, errors, settings, documents."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from rag.config import Settings
from rag.errors import NookError
from rag.llms import FAKE_ANSWER
from rag.service import NookService, safe_upload_name
from tests.conftest import ROOT, SAMPLES

APP = str(ROOT / "app.py")
PHYSIO = "When is my first physio appointment after the ankle sprain?"
PHYSIO_SOURCE = "2024-03-26.md"


@pytest.fixture
def fake_env(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> Path:
    monkeypatch.setenv("NOOK_LLM_BACKEND", "fake")
    monkeypatch.setenv("NOOK_DATA_DIR", str(data_dir))
    return data_dir


def start(timeout: float = 120) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    assert not at.exception, at.exception
    return at


def ask(at: AppTest, question: str) -> AppTest:
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception
    return at


def assistant_messages(at: AppTest) -> list:
    return [m for m in at.chat_message if m.name == "assistant"]


def markdown_text(block) -> str:
    return "\n".join(m.value for m in block.markdown)


def caption_text(block) -> str:
    return "\n".join(c.value for c in block.caption)


def sources_line(block) -> str:
    lines = [c.value for c in block.caption if c.value.startswith("Sources:")]
    assert len(lines) == 1, caption_text(block)
    return lines[0]


def unescape(text: str) -> str:
    return text.replace("\\", "")


# ---------------------------------------------------------------- chat


def test_chat_streams_the_answer_with_numbered_sources(fake_env: Path) -> None:
    at = ask(start(), PHYSIO)
    user, assistant = at.chat_message
    assert user.name == "user" and PHYSIO in markdown_text(user)
    assert assistant.markdown[0].value == FAKE_ANSWER
    line = unescape(sources_line(assistant))
    # Numbered 1..k like the answer's [n]; the cited one ([1]) is bold, and the right file is among them.
    assert line.startswith("Sources: **[1] ")
    assert [f"[{n}]" in line for n in range(1, 6)] == [True] * 5
    assert PHYSIO_SOURCE in line
    # Each excerpt is shown with the question's words highlighted.
    snippets = [m.value for m in assistant.markdown if m.value.startswith('<div class="nook-snippet">')]
    assert len(snippets) == 5
    assert any("<mark>ankle</mark>" in s.lower() for s in snippets)
    assert "cited" in markdown_text(assistant)
    assert caption_text(assistant).splitlines()[-1].startswith("fake · fake · ")
    assert not at.error
    # The turn stays on the page after another run.
    at.run()
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    assert at.chat_message[1].markdown[0].value == FAKE_ANSWER


def test_follow_up_question_gets_an_answer_too(fake_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The fake model also "condenses" the follow-up into its canned sentence; no floor, so that still finds chunks.
    monkeypatch.setenv("NOOK_RELEVANCE_FLOOR", "-1")
    at = ask(ask(start(), PHYSIO), "And who did I see there?")
    assert [m.name for m in at.chat_message] == ["user", "assistant", "user", "assistant"]
    assert at.chat_message[3].markdown[0].value == FAKE_ANSWER


def test_not_found_is_shown_as_info_not_as_an_answer(fake_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOOK_RELEVANCE_FLOOR", "0.99")
    at = ask(start(), PHYSIO)
    assistant = assistant_messages(at)[0]
    assert len(assistant.info) == 1
    assert "I could not find this in your documents." in assistant.info[0].value
    assert FAKE_ANSWER not in markdown_text(assistant)  # no model was asked
    assert not [c for c in assistant.caption if c.value.startswith("Sources:")]
    assert not at.error


def test_empty_index_is_one_error_line_and_the_page_keeps_working(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NOOK_LLM_BACKEND", "fake")
    monkeypatch.setenv("NOOK_DATA_DIR", str(tmp_path / "empty"))
    at = start()
    assert not at.error
    assert at.expander[0].label.startswith("Documents · 0 in nook")  # opens itself when nothing is indexed
    ask(at, PHYSIO)
    assert len(at.error) == 1
    message = at.error[0].value
    assert "is empty" in message and "python -m ingest" in message and "\n" not in message
    assert not at.exception
    ask(at, "Anything at all?")  # still answers input, with the same one-line error
    assert len(at.error) == 2 and not at.exception
    assert at.chat_input[0] is not None


def test_invalid_settings_are_one_error_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOOK_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("NOOK_TEMPERATURE", "7")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert len(at.error) == 1 and "temperature" in at.error[0].value


def test_sidebar_k_reaches_the_chain(fake_env: Path) -> None:
    at = start()
    at.slider(key="k").set_value(2).run()
    assistant = assistant_messages(ask(at, PHYSIO))[0]
    line = unescape(sources_line(assistant))
    assert "[1]" in line and "[2]" in line and "[3]" not in line


def test_sidebar_backend_reaches_the_chain(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOOK_LLM_BACKEND", "llamacpp")  # would load SmolLM2 if the choice were ignored
    monkeypatch.setenv("NOOK_DATA_DIR", str(data_dir))
    at = start()
    assert at.selectbox(key="backend").value == "llamacpp"
    assert "SmolLM2" in at.selectbox(key="model-llamacpp").format_func(at.selectbox(key="model-llamacpp").value)
    at.selectbox(key="backend").set_value("fake").run()
    assistant = assistant_messages(ask(at, PHYSIO))[0]
    assert assistant.markdown[0].value == FAKE_ANSWER
    assert caption_text(assistant).splitlines()[-1].startswith("fake · ")


def test_folder_filter_reaches_the_search(fake_env: Path) -> None:
    at = start()
    assert at.multiselect(key="folders").options == ["samples/diary", "samples/docs", "samples/notes"]
    at.multiselect(key="folders").set_value([str(SAMPLES / "notes")]).run()
    line = unescape(sources_line(assistant_messages(ask(at, PHYSIO))[0]))
    assert PHYSIO_SOURCE not in line  # the diary is filtered out
    assert "running-plan.rst" in line


def test_index_stats_in_the_sidebar(fake_env: Path) -> None:
    at = start()
    metrics = {m.label: m.value for m in at.sidebar.metric}
    assert metrics == {"Documents": "18", "Chunks": metrics["Chunks"]} and int(metrics["Chunks"]) > 18
    stats_caption = "\n".join(c.value for c in at.sidebar.caption)
    assert "Last sync just now" in stats_caption or "min ago" in stats_caption
    assert Settings().embedding_model in stats_caption


def test_a_collection_built_with_another_shipped_model_keeps_working(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from rag.embeddings import EMBEDDING_MODELS
    from tests.app.conftest import index_samples

    other = next(name for name in EMBEDDING_MODELS if name != Settings().embedding_model)
    data = tmp_path / "nookdata"
    index_samples(data, NOOK_EMBEDDING_MODEL=other)  # nothing is configured below: the default is another model
    monkeypatch.setenv("NOOK_LLM_BACKEND", "fake")
    monkeypatch.setenv("NOOK_DATA_DIR", str(data))
    at = ask(start(), PHYSIO)
    assert not at.error, [e.value for e in at.error]
    assert PHYSIO_SOURCE in unescape(sources_line(assistant_messages(at)[0]))
    assert other in "\n".join(c.value for c in at.sidebar.caption)


def test_new_chat_clears_the_history(fake_env: Path) -> None:
    at = ask(start(), PHYSIO)
    assert len(at.chat_message) == 2
    at.sidebar.button[0].click().run()
    assert at.sidebar.button[0].label == "New chat"
    assert len(at.chat_message) == 0
    assert not at.exception


# ---------------------------------------------------------------- documents


def test_sync_a_folder_typed_by_the_user(fake_env: Path, tmp_path: Path) -> None:
    folder = tmp_path / "more-notes"
    folder.mkdir()
    (folder / "teapot.md").write_text("# The blue teapot\n\nThe blue teapot came from a market in Porto in 2019.\n")
    at = start()
    assert at.button(key="sync").disabled  # nothing typed yet
    at.text_input(key="sync-path").set_value(str(folder)).run()
    at.button(key="sync").click().run()
    assert not at.exception
    assert any("1 new" in s.value for s in at.success), [s.value for s in at.success]
    assert {m.label: m.value for m in at.sidebar.metric}["Documents"] == "19"
    assert at.button(key=f"remove:{folder / 'teapot.md'}")  # listed, with its remove button
    assistant = assistant_messages(ask(at, "Where did the blue teapot come from?"))[0]
    assert "[1] teapot.md" in unescape(sources_line(assistant))


def test_sync_a_missing_folder_is_one_error_line(fake_env: Path, tmp_path: Path) -> None:
    at = start()
    at.text_input(key="sync-path").set_value(str(tmp_path / "nowhere")).run()
    at.button(key="sync").click().run()
    assert not at.exception
    assert len(at.error) == 1 and "not found" in at.error[0].value


def test_upload_saves_under_a_safe_name_and_indexes(fake_env: Path) -> None:
    at = start()
    content = b"# Lighthouse\n\nThe lighthouse keeper's cat is called Fresnel.\n"
    at.file_uploader[0].set_value(("../../outside/lighthouse.md", content, "text/markdown")).run()
    at.button(key="index-uploads").click().run()
    assert not at.exception
    saved = fake_env / "uploads" / "lighthouse.md"
    assert saved.read_bytes() == content
    assert not (fake_env.parent / "outside").exists()
    assert any("1 new" in s.value for s in at.success), [s.value for s in at.success]
    assert {m.label: m.value for m in at.sidebar.metric}["Documents"] == "19"
    assistant = assistant_messages(ask(at, "What is the lighthouse keeper's cat called?"))[0]
    assert "lighthouse.md" in unescape(sources_line(assistant))


def test_upload_of_an_unreadable_type_is_refused(fake_env: Path) -> None:
    at = start()
    at.file_uploader[0].set_value(("tool.exe", b"MZ\x90\x00", "application/octet-stream")).run()
    at.button(key="index-uploads").click().run()
    assert not at.exception
    assert len(at.error) == 1 and ".exe files are not supported" in at.error[0].value
    assert not (fake_env / "uploads" / "tool.exe").exists()


@pytest.mark.parametrize(
    ("name", "saved_as"),
    [
        ("notes.md", "notes.md"),
        ("../../etc/passwd.txt", "passwd.txt"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ("/abs/path/京都.md", "京都.md"),
        (".hidden.md", "hidden.md"),
        ('a<b>:c"d|e?f*.txt', "a_b__c_d_e_f_.txt"),
    ],
)
def test_safe_upload_name(name: str, saved_as: str) -> None:
    assert safe_upload_name(name) == saved_as


@pytest.mark.parametrize("name", ["..", "../", "a/..", "", "noextension", "virus.exe", "photo.jpg", ".md"])
def test_safe_upload_name_rejects(name: str) -> None:
    with pytest.raises(NookError):
        safe_upload_name(name)


def test_save_upload_never_writes_outside_the_uploads_folder(tmp_path: Path) -> None:
    service = NookService(Settings(data_dir=tmp_path / "d"), embedder=object())
    outside = tmp_path / "outside.md"
    (tmp_path / "d" / "uploads").mkdir(parents=True)
    (tmp_path / "d" / "uploads" / "link.md").symlink_to(outside)  # a planted symlink must not be followed
    with pytest.raises(NookError, match="outside"):
        service.save_upload("link.md", b"# x\n")
    assert not outside.exists()
    with pytest.raises(NookError, match="too large"):
        service.save_upload("big.md", b"x" * (2 * 1024 * 1024), max_mb=1)
    assert service.save_upload("../../ok.md", b"# ok\n") == (tmp_path / "d" / "uploads" / "ok.md").resolve()


def test_remove_a_document(fake_env: Path) -> None:
    at = start()
    path = str(SAMPLES / "diary" / PHYSIO_SOURCE)
    chunks_before = int({m.label: m.value for m in at.sidebar.metric}["Chunks"])
    at.button(key=f"remove:{path}").click().run()
    assert not at.exception
    assert any(f"Removed {PHYSIO_SOURCE}" in s.value for s in at.success)
    metrics = {m.label: m.value for m in at.sidebar.metric}
    assert metrics["Documents"] == "17" and int(metrics["Chunks"]) < chunks_before
    assert not [b for b in at.button if b.key == f"remove:{path}"]
    # Gone from the manifest and from Chroma, so no answer can cite it any more.
    service = NookService(Settings(data_dir=fake_env))
    assert path not in {d.path for d in service.documents()}
    assert service.searcher.client.get_collection("nook").get(where={"source": path})["ids"] == []
    assert (SAMPLES / "diary" / PHYSIO_SOURCE).exists()  # the file itself stays
    line = unescape(sources_line(assistant_messages(ask(at, PHYSIO))[0]))
    assert PHYSIO_SOURCE not in line


# ---------------------------------------------------------------- the real bundled model


@pytest.mark.slow
def test_real_bundled_model_streams_an_answer_with_sources(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOOK_DATA_DIR", str(data_dir))
    monkeypatch.setenv("NOOK_MAX_TOKENS", "16")
    monkeypatch.setenv("NOOK_ANSWER_CACHE", "false")
    at = start(timeout=300)
    assert at.selectbox(key="backend").value == "llamacpp"
    assistant = assistant_messages(ask(at, PHYSIO))[0]
    assert not at.error, [e.value for e in at.error]
    answer = assistant.markdown[0].value
    assert answer.strip() and answer != FAKE_ANSWER
    assert PHYSIO_SOURCE in unescape(sources_line(assistant))
    assert caption_text(assistant).splitlines()[-1].startswith("llamacpp · ")


def test_last_eval_report_is_shown_in_the_sidebar(fake_env: Path) -> None:
    at = start()
    assert any("python -m rag eval" in c.value for c in at.sidebar.caption)  # no report yet: how to make one
    service = NookService(Settings(data_dir=fake_env))
    report = service.evaluate(ROOT / "data" / "sample-questions.jsonl")
    at = start()
    assert any(c.value.startswith("sample-questions.jsonl:") for c in at.sidebar.caption)
    table = at.sidebar.dataframe[0].value
    assert list(table["group"])[:1] == ["all"]
    assert {"en", "zh", "zh->en"} <= set(table["group"])
    assert list(table["questions"])[0] == report.overall.questions
