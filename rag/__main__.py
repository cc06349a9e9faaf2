"""`python -m rag search "QUESTION"`: query the local index from the terminal."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rag.errors import NookError
from rag.privacy import enforce_offline


def build_parser() -> argparse.ArgumentParser:
    """The command line of the rag command."""
    parser = argparse.ArgumentParser(prog="python -m rag", description="Ask your local index.")
    parser.add_argument("--collection", help="collection to search (default: nook)")
    parser.add_argument("--data-dir", type=Path, help="where the index lives (default: .nook)")
    parser.add_argument("--config", type=Path, help="settings file (default: nook.toml if present)")
    commands = parser.add_subparsers(dest="command", required=True)
    search = commands.add_parser("search", help="show the chunks that best match a question")
    search.add_argument("question", nargs="?", help="the question; without it, one question per line on stdin")
    search.add_argument("-k", type=int, default=5, help="how many chunks (default 5)")
    search.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; 1 with a one-line message on a user error, 2 on a usage error."""
    enforce_offline()
    args = build_parser().parse_args(argv)
    try:
        from rag.config import load_settings
        from rag.embeddings import LazyEmbedder
        from rag.retrieval import Searcher

        settings = load_settings(args.config, collection=args.collection, data_dir=args.data_dir)
        embedder = LazyEmbedder(settings.embedding_model, precision=settings.embedding_precision)
        questions = [args.question] if args.question else [line.strip() for line in sys.stdin if line.strip()]
        searcher = Searcher(settings, embedder)
        for question in questions:
            hits = searcher.search(question, k=args.k).hits
            if args.json or not args.question:
                results = [{"text": h.text, "source": h.source, "page": h.page, "score": round(h.score, 4)} for h in hits]
                print(json.dumps({"question": question, "results": results}, ensure_ascii=False), flush=True)
                continue
            for rank, hit in enumerate(hits, start=1):
                where = f"{hit.source}" + (f" p.{hit.page}" if hit.page else "")
                snippet = " ".join(hit.text.split())[:160]
                print(f"[{rank}] {hit.score:.3f}  {where}\n    {snippet}")
    except NookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
