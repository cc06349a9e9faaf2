"""Tell Chinese text from English: the one rule chunks are tagged by and questions are compared with."""

from __future__ import annotations

import re

CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
CJK_RUN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")  # Chinese words are runs of these, with no spaces


def text_language(text: str) -> str:
    """The language of a text: "zh" when a fair share of its letters are CJK ideographs, else "en"."""
    letters = sum(1 for ch in text if ch.isalpha())
    return "zh" if letters and len(CJK.findall(text)) / letters > 0.2 else "en"
