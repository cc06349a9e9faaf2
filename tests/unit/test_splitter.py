import re

import pytest

from ingest.splitter import ChunkSplitter, HeadingIndex
from tests.fakes import HashEmbedder

count = HashEmbedder().count_tokens

ENGLISH = (
    "# Trip\n\nWe left early. The road was empty! Did we forget the map? No; it was in the car.\n\n"
    "## Day two\n\n" + " ".join(f"Sentence number {i} is about the lake and the hills." for i in range(30))
)
CHINESE = "# 日记\n\n" + "".join(f"今天是第{i}天，我们在湖边散步。天气很好！你去过那里吗？" for i in range(40))


@pytest.mark.parametrize("text", [ENGLISH, CHINESE])
def test_chunks_respect_size_and_point_into_the_text(text: str) -> None:
    splitter = ChunkSplitter(chunk_size=40, chunk_overlap=8, length_function=count)
    chunks = splitter.split(text, "markdown")
    assert len(chunks) > 3
    for chunk in chunks:
        assert count(chunk.text) <= 40
        assert text[chunk.start : chunk.start + len(chunk.text)] == chunk.text
    starts = [c.start for c in chunks]
    assert starts == sorted(starts)
    # Nothing is lost: every sentence of the text is in some chunk.
    covered = " ".join(c.text for c in chunks)
    for sentence in re.split(r"(?<=[。！？.!?;])\s*|\n+", text):
        if sentence.strip():
            assert sentence.strip() in covered, sentence


def test_chinese_chunks_end_at_sentence_punctuation() -> None:
    splitter = ChunkSplitter(chunk_size=40, chunk_overlap=0, length_function=count)
    chunks = splitter.split(CHINESE, "markdown")
    body = [c for c in chunks if not c.text.startswith("#")]
    assert body
    # Each chunk but possibly the last ends a sentence: no sentence is cut in the middle.
    for chunk in body[:-1]:
        assert chunk.text[-1] in "。！？", chunk.text


def test_english_chunks_end_at_sentence_end() -> None:
    splitter = ChunkSplitter(chunk_size=30, chunk_overlap=0, length_function=count)
    chunks = splitter.split(ENGLISH, "markdown")
    for chunk in chunks[:-1]:
        assert chunk.text[-1] in ".!?;" or chunk.text.startswith("#"), chunk.text


def test_heading_path_follows_markdown_structure() -> None:
    splitter = ChunkSplitter(chunk_size=40, chunk_overlap=0, length_function=count)
    chunks = splitter.split(ENGLISH, "markdown")
    assert chunks[0].heading == "Trip"
    assert chunks[-1].heading == "Trip > Day two"


def test_heading_index_for_rst() -> None:
    text = "=====\nTitle\n=====\n\nintro\n\nPart A\n======\n\nbody a\n\nDetail\n------\n\ndetail text\n\nPart B\n======\n\nb"
    index = HeadingIndex(text, "rst")
    assert index.path_at(text.index("intro")) == "Title"
    assert index.path_at(text.index("detail text")) == "Title > Part A > Detail"
    assert index.path_at(text.index("\nb", text.index("Part B"))) == "Title > Part B"


def test_no_headings_for_plain_text() -> None:
    assert HeadingIndex("# not a heading in a txt file\n", "").path_at(5) == ""
