import os
import socket

import pytest

from rag.privacy import OFFLINE_ENV, enforce_offline


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
