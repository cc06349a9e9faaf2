from pathlib import Path

import pytest

from rag.config import Settings, load_settings
from rag.errors import SettingsError


def test_defaults() -> None:
    s = load_settings()
    assert s.collection == "nook"
    assert s.data_dir == Path(".nook")
    assert s.chroma_url is None
    assert s.manifest_path == Path(".nook") / "manifest.sqlite3"


def test_toml_then_env_then_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "nook.toml"
    config.write_text('collection = "from-toml"\nchunk_size = 111\ndata_dir = "/tmp/toml-dir"\n')
    s = load_settings(config)
    assert (s.collection, s.chunk_size, s.data_dir) == ("from-toml", 111, Path("/tmp/toml-dir"))

    monkeypatch.setenv("NOOK_COLLECTION", "from-env")
    s = load_settings(config)
    assert (s.collection, s.chunk_size) == ("from-env", 111)

    s = load_settings(config, collection="from-arg", chunk_size=None)
    assert (s.collection, s.chunk_size) == ("from-arg", 111)


def test_nook_config_variable_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text('collection = "named-by-env"\n')
    monkeypatch.setenv("NOOK_CONFIG", str(config))
    assert load_settings().collection == "named-by-env"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"chunk_size": 100, "chunk_overlap": 100}, "chunk_overlap"),
        ({"collection": "a"}, "collection"),
        ({"collection": "bad name!"}, "collection"),
        ({"embedding_precision": "int4"}, "embedding_precision"),
        ({"no_such_setting": 1}, "no_such_setting"),
    ],
)
def test_invalid_settings_are_one_line_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(**kwargs)
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_broken_toml_is_a_settings_error(tmp_path: Path) -> None:
    config = tmp_path / "nook.toml"
    config.write_text("collection = \n")
    with pytest.raises(SettingsError, match="cannot read settings"):
        load_settings(config)


def test_missing_explicit_config_file() -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings("/no/such/nook.toml")


def test_settings_are_not_read_at_import() -> None:
    import importlib

    import rag.config

    # Importing must not build a Settings object: there is no module-level instance to read.
    module = importlib.reload(rag.config)
    assert not any(isinstance(v, Settings) for v in vars(module).values())
