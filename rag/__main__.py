"""`python -m rag ask|search|models|eval`: the local index and models from the terminal."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rag.errors import NookError
from rag.privacy import enforce_offline


def build_parser() -> argparse.ArgumentParser:
    """The command line of the rag command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--collection", help="collection to use (default: nook, or NOOK_COLLECTION)")
    common.add_argument("--data-dir", type=Path, help="where the index lives (default: .nook, or NOOK_DATA_DIR)")
    common.add_argument("--config", type=Path, help="settings file (default: nook.toml if present)")
    common.add_argument("--json", action="store_true", help="print JSON")

    parser = argparse.ArgumentParser(prog="python -m rag", description="Ask your local index.")
    commands = parser.add_subparsers(dest="command", required=True)
    search = commands.add_parser("search", parents=[common], help="show the chunks that best match a question")
    search.add_argument("question", nargs="?", help="the question; without it, one question per line on stdin")
    search.add_argument("-k", type=int, help="how many chunks (default: retrieval_k, 5)")
    ask = commands.add_parser("ask", parents=[common], help="answer a question from your documents, with sources")
    ask.add_argument("question", nargs="?", help="the question; without it, one question per line on stdin")
    ask.add_argument("--backend", help="LLM backend: llamacpp, ollama, gpt4all, llamafile")
    ask.add_argument("--model", help="model file (GGUF) or Ollama model name")
    ask.add_argument("-k", type=int, help="chunks of context (default: retrieval_k, 5)")
    commands.add_parser("models", parents=[common], help="list the local models Nook can use")
    evaluate = commands.add_parser(
        "eval",
        parents=[common],
        help="measure retrieval on a question set",
        description="Score retrieval on SET: a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv), indexed "
        "on its own, or a JSONL file of {\"question\", \"answer\"} pairs scored against your collection.",
    )
    evaluate.add_argument("set", type=Path, help="BEIR folder or .jsonl file of question/answer pairs")
    evaluate.add_argument("-k", type=int, help="cut-off for hit@k (default: retrieval_k, 5)")
    evaluate.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def _questions(arg: str | None) -> Iterable[str]:
    if arg:
        yield arg
        return
    for line in sys.stdin:
        if line.strip():
            yield line.strip()


def _search(args: argparse.Namespace, service: Any) -> None:
    for question in _questions(args.question):
        hits = service.search(question, k=args.k).hits
        if args.json or not args.question:
            results = [{"text": h.text, "source": h.source, "page": h.page, "score": round(h.score, 4)} for h in hits]
            print(json.dumps({"question": question, "results": results}, ensure_ascii=False), flush=True)
            continue
        for rank, hit in enumerate(hits, start=1):
            where = hit.source + (f" p.{hit.page}" if hit.page else "")
            print(f"[{rank}] {hit.score:.3f}  {where}\n    {' '.join(hit.text.split())[:160]}")


def _ask(args: argparse.Namespace, service: Any) -> None:
    for question in _questions(args.question):
        stream = service.ask(question)
        machine = args.json or not args.question
        if machine:
            answer = stream.text()
        else:
            for piece in stream:
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
            answer = stream.result.answer
        result = stream.result
        sources = [
            {"number": s.number, "source": s.source, "page": s.page, "snippet": s.snippet, "score": round(s.score, 4)}
            for s in result.sources
        ]
        if machine:
            print(
                json.dumps(
                    {"question": question, "answer": answer, "found": result.found, "sources": sources},
                    ensure_ascii=False,
                ),
                flush=True,
            )
        elif result.sources:
            print("\nSources:")
            for source in result.sources:
                print(f"  [{source.number}] {source.label()}  ({source.score:.2f})  {source.source}")


def _eval(args: argparse.Namespace, service: Any) -> None:
    from rag.progress import terminal_bar

    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            for bar in bars.values():
                if bar is not None:
                    bar.close()
            bars[stage] = terminal_bar(total, "file" if stage == "index" else "question", not (args.quiet or args.json))
        if (bar := bars[stage]) is not None:
            bar.n = done
            bar.refresh()

    try:
        report = service.evaluate(args.set, k=args.k, on_progress=progress)
    finally:
        for bar in bars.values():
            if bar is not None:
                bar.close()
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=1))
        return
    print(f"{report.set_path}: {report.overall.questions} questions, {report.kind}, collection {report.collection}, "
          f"{report.embedding_model}, {report.seconds:.1f} s")
    print(report.table())
    for question, reason in report.skipped:
        print(f"skipped  {question}: {reason}")


def _models(args: argparse.Namespace, settings: Any) -> None:
    from rag.discovery import OLLAMA_DEFAULT_URL, discover

    folders = [settings.data_dir / "models"]
    if settings.llm_model and Path(settings.llm_model).suffix == ".gguf":
        folders.append(Path(settings.llm_model).expanduser().parent)
    ollama_url = settings.llm_base_url if settings.llm_backend == "ollama" and settings.llm_base_url else None
    entries = discover(folders, ollama_url or OLLAMA_DEFAULT_URL, n_ctx=settings.n_ctx)
    if args.json:
        print(json.dumps([e.__dict__ for e in entries], ensure_ascii=False, indent=2))
        return
    print(f"{'backend':9} {'model':40} {'size MB':>8} {'quant':8} {'prompt':8} {'fits':5} path")
    for e in entries:
        print(
            f"{e.backend:9} {e.name[:40]:40} {e.size_mb:8.1f} {e.quantisation[:8]:8} {e.prompt_family:8} "
            f"{'yes' if e.fits_in_memory else 'no':5} {e.path}"
        )


def main(argv: list[str] | None = None) -> int:
    """Run a command; 1 with a one-line message on a user error, 2 on a usage or settings error."""
    enforce_offline()
    args = build_parser().parse_args(argv)
    try:
        from rag.config import load_settings

        overrides: dict[str, Any] = {"collection": args.collection, "data_dir": args.data_dir}
        if args.command == "ask":
            overrides.update(llm_backend=args.backend, llm_model=args.model, retrieval_k=args.k)
        settings = load_settings(args.config, **overrides)
        if args.command == "models":
            _models(args, settings)
            return 0
        from rag.service import NookService
        from rag.store import follow_index_model

        settings, notice = follow_index_model(settings)
        if notice:
            print(f"note: {notice}", file=sys.stderr)
        service = NookService(settings)
        if args.command == "search":
            _search(args, service)
        elif args.command == "eval":
            _eval(args, service)
        else:
            _ask(args, service)
    except NookError as exc:
        print(f"\nerror: {exc}" if args.command == "ask" else f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
