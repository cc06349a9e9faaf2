import json
import os
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from rag.privacy import OFFLINE_ENV, enforce_offline
from tests.conftest import ROOT


def test_outgoing_connections_are_blocked_in_tests() -> None:
    from pytest_socket import SocketConnectBlockedError

    with pytest.raises(SocketConnectBlockedError):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1: never routed


def test_offline_switches_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("ANONYMIZED_TELEMETRY", "True")
    enforce_offline()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["ANONYMIZED_TELEMETRY"] == "False"
    for key, value in OFFLINE_ENV.items():
        assert os.environ[key] == value


def test_chroma_clients_have_telemetry_off(tmp_path) -> None:
    from rag.config import Settings
    from rag.store import open_client

    client = open_client(Settings(data_dir=tmp_path))
    assert client.get_settings().anonymized_telemetry is False


def test_hub_libraries_are_offline_after_enforce() -> None:
    enforce_offline()
    import huggingface_hub.constants as hub

    # The constant is read at import time: conftest calls enforce_offline() before any hub import.
    assert hub.HF_HUB_OFFLINE is True


# ---------------------------------------------------------------- every switch, and the libraries that read them

# Each switch as Nook sets it, and the opposite a user (or a shell profile) might have set.
REQUIRED_SWITCHES = {
    "HF_HUB_OFFLINE": ("1", "0"),
    "TRANSFORMERS_OFFLINE": ("1", "0"),
    "HF_HUB_DISABLE_TELEMETRY": ("1", "0"),
    "ANONYMIZED_TELEMETRY": ("False", "True"),
    "STREAMLIT_BROWSER_GATHER_USAGE_STATS": ("false", "true"),
}


@pytest.mark.parametrize("key", REQUIRED_SWITCHES)
def test_enforce_offline_overrides_a_user_who_turned_the_switch_on(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    nook_value, user_value = REQUIRED_SWITCHES[key]
    monkeypatch.setenv(key, user_value)
    enforce_offline()
    assert os.environ[key] == nook_value


HUB_PROBE = """
import json, sys
if sys.argv[1] == "enforce":
    from rag.privacy import enforce_offline
    enforce_offline()
import huggingface_hub
from huggingface_hub import constants
print(json.dumps({"offline": constants.HF_HUB_OFFLINE, "offline_mode": huggingface_hub.is_offline_mode(),
                  "telemetry_disabled": constants.HF_HUB_DISABLE_TELEMETRY}))
"""


def hub_state(enforce: bool, tmp_path: Path) -> dict[str, bool]:
    """What a fresh huggingface_hub (which transformers and sentence-transformers go through) decides."""
    env = {key: value for key, value in os.environ.items() if key not in OFFLINE_ENV}
    env.update(HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0", HF_HUB_DISABLE_TELEMETRY="0", PYTHONPATH=str(ROOT))
    env.pop("DISABLE_TELEMETRY", None)
    env["HOME"] = str(tmp_path)
    probe = subprocess.run(
        [sys.executable, "-c", HUB_PROBE, "enforce" if enforce else "as-is"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    return json.loads(probe.stdout)


def test_hub_libraries_imported_after_enforce_offline_are_offline_and_silent(tmp_path: Path) -> None:
    # The control: the environment given to the child turns the hub on, so enforce_offline() is what switches it off.
    keys = ("offline", "offline_mode", "telemetry_disabled")
    assert hub_state(enforce=False, tmp_path=tmp_path) == dict.fromkeys(keys, False)
    assert hub_state(enforce=True, tmp_path=tmp_path) == dict.fromkeys(keys, True)


# ---------------------------------------------------------------- Chroma

def test_chroma_telemetry_stays_off_when_the_environment_turns_it_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag.config import Settings
    from rag.store import open_client

    # chromadb's Settings read ANONYMIZED_TELEMETRY from the environment: only Nook's own argument keeps this False.
    monkeypatch.setenv("ANONYMIZED_TELEMETRY", "True")
    client = open_client(Settings(data_dir=tmp_path, collection="telemetry-on"))
    assert client.get_settings().anonymized_telemetry is False


def test_chroma_server_clients_have_telemetry_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import chromadb

    from rag.config import Settings
    from rag.store import open_client

    opened: list[dict[str, Any]] = []

    def http_client(**kwargs: Any) -> str:
        opened.append(kwargs)
        return "client"

    monkeypatch.setenv("ANONYMIZED_TELEMETRY", "True")
    monkeypatch.setattr(chromadb, "HttpClient", http_client)
    assert open_client(Settings(chroma_url="http://127.0.0.1:8000")) == "client"
    assert [kwargs["settings"].anonymized_telemetry for kwargs in opened] == [False]
    assert opened[0]["host"] == "127.0.0.1"


CHROMA_CLIENT_CALL = re.compile(r"\b(?:PersistentClient|HttpClient|EphemeralClient|AsyncHttpClient|CloudClient)\(|"
                                r"\bchromadb\.Client\(")


def test_every_chroma_client_is_opened_by_rag_store() -> None:
    # open_client is where telemetry is switched off; a client made anywhere else would not be.
    sources = [ROOT / "app.py", *sorted((ROOT / "rag").rglob("*.py")), *sorted((ROOT / "ingest").rglob("*.py"))]
    makers = [path.relative_to(ROOT).as_posix() for path in sources if CHROMA_CLIENT_CALL.search(path.read_text())]
    assert makers == ["rag/store.py"]


# ---------------------------------------------------------------- Streamlit

STREAMLIT_CONFIG = ROOT / ".streamlit" / "config.toml"


def test_streamlit_config_binds_to_loopback_and_gathers_no_usage_stats() -> None:
    config = tomllib.loads(STREAMLIT_CONFIG.read_text(encoding="utf-8"))
    assert config["server"]["address"] == "127.0.0.1"
    assert config["browser"]["gatherUsageStats"] is False
    assert config["browser"]["serverAddress"] == "127.0.0.1"


STREAMLIT_PROBE = """
import json
from streamlit import config
config.get_config_options(force_reparse=True)
print(json.dumps({key: config.get_option(key) for key in ("server.address", "browser.gatherUsageStats")}))
"""


def test_streamlit_itself_reads_loopback_and_no_usage_stats_from_the_project_config(tmp_path: Path) -> None:
    # Without the file Streamlit would listen on every interface and gather usage stats (its defaults).
    env = {key: value for key, value in os.environ.items() if not key.startswith("STREAMLIT_")}
    env["HOME"] = str(tmp_path)  # no ~/.streamlit/config.toml of the developer's
    probe = subprocess.run(
        [sys.executable, "-c", STREAMLIT_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == {"server.address": "127.0.0.1", "browser.gatherUsageStats": False}
