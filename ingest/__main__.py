"""`python -m ingest PATH [PATH ...]`: sync folders of documents into the local index."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rag.errors import NookError
from rag.privacy import enforce_offline

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """The command line of the ingest command."""
    parser = argparse.ArgumentParser(
        prog="python -m ingest",
        description="Sync documents into Nook's local index: new and changed files are (re)indexed, "
        "unchanged ones skipped, deleted ones removed.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="folders or files to index")
    parser.add_argument("--collection", help="collection to sync into (default: nook, or NOOK_COLLECTION)")
    parser.add_argument("--data-dir", type=Path, help="where the index lives (default: .nook, or NOOK_DATA_DIR)")
    parser.add_argument("--chroma-url", help="use a Chroma server instead of the embedded index")
    parser.add_argument("--config", type=Path, help="settings file (default: nook.toml if present)")
    parser.add_argument("--chunk-size", type=int, help="largest chunk in embedding tokens")
    parser.add_argument("--chunk-overlap", type=int, help="tokens shared by neighbouring chunks")
    parser.add_argument("--rebuild", action="store_true", help="drop the collection and index everything again")
    parser.add_argument("--dry-run", action="store_true", help="only print what would change")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


class _Progress:
    """A tqdm bar over files, with chunks and their rate, on a terminal only."""

    def __init__(self, enabled: bool) -> None:
        self._bar: Any = None
        self._enabled = enabled

    def __call__(self, done: int, total: int, chunks: int) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            from rag.progress import terminal_bar

            self._bar = terminal_bar(total, "file")
            if self._bar is None:
                self._enabled = False
                return
        self._bar.n = done
        rate = chunks / self._bar.format_dict["elapsed"] if self._bar.format_dict["elapsed"] else 0.0
        self._bar.set_postfix_str(f"{chunks} chunks, {rate:.1f} chunks/s", refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _one_line(text: str) -> str:
    """A path or reason kept on its report line: a file name may hold a newline."""
    return text.replace("\n", "\\n").replace("\r", "\\r")


def main(argv: list[str] | None = None) -> int:
    """Run the sync; 0 when every file went in, 1 when some failed, 2 on a usage or settings error."""
    enforce_offline()
    args = build_parser().parse_args(argv)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE

    from rag.config import load_settings

    progress = _Progress(enabled=not args.quiet and not args.json and sys.stderr.isatty())
    try:
        settings = load_settings(
            args.config,
            collection=args.collection,
            data_dir=args.data_dir,
            chroma_url=args.chroma_url,
            chunk_size=args.chunk_size,
            chunk_overlap=args.chunk_overlap,
        )
        from ingest.pipeline import IngestPipeline
        from rag.embeddings import LazyEmbedder
        from rag.store import follow_index_model

        if not args.rebuild:  # a rebuild starts over with the configured (or default) model
            settings, notice = follow_index_model(settings)
            if notice:
                print(f"note: {notice}", file=sys.stderr)

        embedder = LazyEmbedder(
            settings.embedding_model, batch_size=settings.embedding_batch_size, precision=settings.embedding_precision
        )
        pipeline = IngestPipeline(settings, embedder)
        report = pipeline.sync(args.paths, dry_run=args.dry_run, rebuild=args.rebuild, on_progress=progress)
    except NookError as exc:
        progress.close()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        progress.close()
        print("interrupted: the next run picks up where this one stopped", file=sys.stderr)
        return 130
    progress.close()

    if args.json:
        print(json.dumps(report.__dict__, ensure_ascii=False, indent=2))
    else:
        if report.recovered:
            print("recovered from an interrupted run: the index was reconciled with the manifest")
        if args.dry_run:
            for kind in ("new", "changed", "deleted"):
                for path in report.planned.get(kind, []):
                    print(f"{kind:8} {_one_line(path)}")
        for path, reason in report.skipped_files:
            print(f"skipped  {_one_line(path)}: {_one_line(reason)}")
        for path, reason in report.failures:
            print(f"failed   {_one_line(path)}: {_one_line(reason)}")
        print(report.summary())
    return EXIT_SOME_FAILED if report.failures else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
