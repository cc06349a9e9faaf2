"""Real documents no one here wrote: Debian's python3.11-doc reST sources, fetched with apt and cached in bench/.cache."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"
PACKAGE = "python3.11-doc"


def python_doc_sources() -> Path:
    """The `_sources` folder of the Python 3.11 HTML docs (reST), downloading the Debian package once."""
    root = CACHE / PACKAGE
    sources = root / "usr/share/doc/python3.11/html/_sources"
    if sources.is_dir():
        return sources
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", PACKAGE], cwd=CACHE, check=True, capture_output=True)
    deb = next(CACHE.glob(f"{PACKAGE}_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return sources


def library_corpus(files: int = 60) -> Path:
    """The first N reST files of the library reference, as .rst files in a folder of their own."""
    target = CACHE / f"library-{files}"
    if target.is_dir() and len(list(target.iterdir())) == files:
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    chosen = sorted((python_doc_sources() / "library").glob("*.rst.txt"))[:files]
    for path in chosen:
        shutil.copy(path, target / path.name.removesuffix(".txt"))
    return target


@dataclass(frozen=True)
class FaqQuestion:
    """A question heading of the Python FAQ and the answer text below it."""

    question: str
    answer: str
    file: str


_HEADING = re.compile(r"^(?P<title>[^\n]+)\n(?P<rule>[-=~^\"*]{3,})[ \t]*$", re.MULTILINE)


def faq_set() -> tuple[Path, list[FaqQuestion]]:
    """The Python FAQ with every question heading removed from the text, and the questions with their answers."""
    target = CACHE / "faq-corpus"
    questions: list[FaqQuestion] = []
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in sorted((python_doc_sources() / "faq").glob("*.rst.txt")):
        text = path.read_text(encoding="utf-8")
        headings = list(_HEADING.finditer(text))
        kept: list[str] = [text[: headings[0].start()] if headings else text]
        for i, match in enumerate(headings):
            body = text[match.end() : headings[i + 1].start() if i + 1 < len(headings) else len(text)]
            title = match.group("title").strip()
            if title.endswith("?"):
                answer = " ".join(body.split())
                if len(answer) >= 80:
                    questions.append(FaqQuestion(title, answer, path.name.removesuffix(".rst.txt") + ".txt"))
                kept.append(body)  # the question heading is dropped, the answer stays
            else:
                kept.append(match.group(0) + body)
        name = path.name.removesuffix(".rst.txt") + ".txt"
        (target / name).write_text("\n".join(kept), encoding="utf-8")
    return target, questions
