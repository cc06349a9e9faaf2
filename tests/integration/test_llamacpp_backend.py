"""The bundled SmolLM2 GGUF through LlamaCpp, in process: the selected prompt streams real tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import Settings
from rag.errors import BackendError
from rag.llms import LLMInfo, build_llm
from rag.prompts import select_prompt

pytestmark = pytest.mark.slow

CONTEXT = "[1] notes/tea.md: Green tea steeps for two minutes at 80 degrees.\n[2] notes/coffee.md: Espresso takes 25 s."


@pytest.fixture(scope="module")
def smollm2() -> LLMInfo:
    settings = Settings(llm_backend="llamacpp", n_threads=2, max_tokens=24, n_ctx=2048, temperature=0.0)
    return build_llm(settings)


def test_smollm2_is_served_as_a_chatml_completion_model(smollm2: LLMInfo) -> None:
    assert (smollm2.backend, smollm2.chat, smollm2.family) == ("llamacpp", False, "chatml")
    assert smollm2.llm.verbose is False
    text = select_prompt("answer", smollm2).format(context=CONTEXT, question="How long does green tea steep?")
    assert "<|im_start|>" in text and "[INST]" not in text


def test_selected_prompt_streams_several_chunks(smollm2: LLMInfo) -> None:
    prompt = select_prompt("answer", smollm2)
    chunks = list(smollm2.llm.stream(prompt.invoke({"context": CONTEXT, "question": "How long does green tea steep?"})))
    assert len(chunks) > 1
    text = "".join(chunks)
    assert text.strip()
    assert "<|im_end|>" not in text and "<|im_start|>" not in text  # stopped at the end of its turn


def test_condense_prompt_gives_text(smollm2: LLMInfo) -> None:
    prompt = select_prompt("condense", smollm2)
    text = smollm2.llm.invoke(
        prompt.invoke({"chat_history": "Human: How long does green tea steep?\nAI: Two minutes [1].",
                       "question": "And at what temperature?"})
    )
    assert isinstance(text, str) and text.strip()


def test_missing_model_path_is_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "missing.gguf"
    with pytest.raises(BackendError) as err:
        build_llm(Settings(llm_backend="llamacpp", llm_model=str(missing), n_threads=2))
    assert str(err.value).startswith(f"model file not found: {missing}")
    assert "\n" not in str(err.value)


def test_truncated_gguf_does_not_crash_llama_cpp(tmp_path: Path, smollm2: LLMInfo) -> None:
    truncated = tmp_path / "truncated.gguf"
    with Path(smollm2.model).open("rb") as source:
        truncated.write_bytes(source.read(1_000_000))
    # prompt_family skips our metadata read, so llama.cpp itself meets the broken file.
    with pytest.raises(BackendError) as err:
        build_llm(Settings(llm_backend="llamacpp", llm_model=str(truncated), prompt_family="chatml", n_threads=2))
    assert str(err.value).startswith(f"llama.cpp cannot load {truncated}")
    assert "\n" not in str(err.value)
