"""Load the prompt templates in prompts/ and choose the one that fits the configured model."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from langchain_classic.chains.prompt_selector import ConditionalPromptSelector, is_chat_model
from langchain_core.language_models import BaseLanguageModel
from langchain_core.prompts import BasePromptTemplate, ChatPromptTemplate, PromptTemplate

from rag.errors import SettingsError
from rag.models import FAMILY_METADATA_KEY, PROMPT_FAMILIES

if TYPE_CHECKING:
    from rag.llms import LLMInfo

PURPOSE_VARIABLES: dict[str, frozenset[str]] = {
    "answer": frozenset({"context", "question"}),
    "condense": frozenset({"chat_history", "question"}),
}


@dataclass(frozen=True)
class PromptSet:
    """Every form of one purpose's prompt: chat messages, and a raw string template per prompt family."""

    purpose: str
    chat: ChatPromptTemplate
    raw: dict[str, PromptTemplate]


def default_prompts_dir() -> Path:
    """The prompts/ folder next to the rag package."""
    return Path(__file__).resolve().parent.parent / "prompts"


def _read(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read prompt template {path}: {exc.strerror or exc}") from None
    # The final newline ends the file; it is not part of the prompt (ChatML and Llama 3 keep theirs on purpose).
    return text.removesuffix("\n")


def _escape(text: str) -> str:
    # The system text is literal: braces in it must not become template variables.
    return text.replace("{", "{{").replace("}", "}}")


@functools.lru_cache(maxsize=8)
def load_prompts(purpose: str, prompts_dir: Path | None = None) -> PromptSet:
    """Build a purpose's chat template and one raw template per prompt family from the files in `prompts_dir`.

    `<purpose>.system.txt` and `<purpose>.user.txt` hold the text; each `<family>.txt` wraps them in that family's
    special tokens through its `{system}` and `{user}` slots.

    Args:
        purpose: "answer" (context + question) or "condense" (chat history + follow-up question).
        prompts_dir: folder with the templates; default is the project's prompts/.

    Raises:
        SettingsError: unknown purpose, or a template file that is missing or has the wrong variables.
    """
    if purpose not in PURPOSE_VARIABLES:
        raise SettingsError(f"unknown prompt purpose '{purpose}'. Available: {', '.join(PURPOSE_VARIABLES)}")
    folder = prompts_dir or default_prompts_dir()
    system = _escape(_read(folder / f"{purpose}.system.txt"))
    user = _read(folder / f"{purpose}.user.txt")
    raw: dict[str, PromptTemplate] = {}
    for family in PROMPT_FAMILIES:
        wrapper = _read(folder / f"{family}.txt")
        raw[family] = PromptTemplate.from_template(wrapper.replace("{system}", system).replace("{user}", user))
    chat = ChatPromptTemplate.from_messages([("system", system), ("human", user)])
    expected = PURPOSE_VARIABLES[purpose]
    for name, template in [*raw.items(), ("chat", chat)]:
        if set(template.input_variables) != expected:
            raise SettingsError(
                f"prompt template '{name}' for '{purpose}' has variables {sorted(template.input_variables)}, "
                f"expected {sorted(expected)} (check {folder})"
            )
    return PromptSet(purpose=purpose, chat=chat, raw=raw)


def model_family(llm: BaseLanguageModel) -> str:
    """The prompt family a model was built for (recorded by rag.llms); generic when it says nothing."""
    return str((llm.metadata or {}).get(FAMILY_METADATA_KEY, "generic"))


def _family_is(family: str, llm: BaseLanguageModel) -> bool:
    return model_family(llm) == family


def build_selector(purpose: str, prompts_dir: Path | None = None) -> ConditionalPromptSelector:
    """A selector that gives chat models messages and completion models their own family's raw template.

    Chat models come first: their server applies the model's template, so they must never see special tokens.
    """
    prompts = load_prompts(purpose, prompts_dir)
    conditionals = [(is_chat_model, prompts.chat)] + [
        (functools.partial(_family_is, family), prompts.raw[family])
        for family in PROMPT_FAMILIES
        if family != "generic"
    ]
    return ConditionalPromptSelector(default_prompt=prompts.raw["generic"], conditionals=conditionals)


def select_prompt(purpose: str, llm_info: LLMInfo, prompts_dir: Path | None = None) -> BasePromptTemplate:
    """The prompt for `purpose` that the model behind `llm_info` understands."""
    return build_selector(purpose, prompts_dir).get_prompt(llm_info.llm)
