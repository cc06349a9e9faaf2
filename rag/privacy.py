"""Keep every library Nook uses offline and silent: no hub download, no telemetry."""

from __future__ import annotations

import os

# Each variable is read by a library at import or first use; set them before those imports happen.
OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",  # huggingface_hub: never contact the hub
    "TRANSFORMERS_OFFLINE": "1",  # transformers: load only local files
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "ANONYMIZED_TELEMETRY": "False",  # chromadb's posthog telemetry
    "DO_NOT_TRACK": "1",
    "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    "TOKENIZERS_PARALLELISM": "false",  # avoids fork warnings, no network meaning
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # weights load from disk; no bars in our output
    "TRANSFORMERS_VERBOSITY": "error",
    "LANGCHAIN_TRACING_V2": "false",  # never send traces to LangSmith
    "LANGSMITH_TRACING": "false",
}


def enforce_offline() -> None:
    """Set the offline and no-telemetry switches for this process and its children.

    Called by every entry point before it imports sentence-transformers, Chroma or Streamlit.
    Values a user set are overwritten on purpose: offline is a promise, not a default.
    """
    os.environ.update(OFFLINE_ENV)
