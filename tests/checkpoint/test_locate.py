"""Model names (modeling_aio.checkpoint.locate): `aio-reid` is found from any directory, and without a network the
error comes at once and says what to pass."""

from __future__ import annotations

import time

import pytest

from modeling_aio.checkpoint import locate


@pytest.fixture
def checkpoint(tmp_path):
    folder = tmp_path / "repo" / "aio-reid"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_aio_reid_resolves_to_the_linked_build_from_another_directory(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("AIO_REID_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AIO_REID_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    link = locate.link_default(checkpoint)
    assert link == tmp_path / "home" / "aio-reid" and link.resolve() == checkpoint.resolve()
    assert locate.resolve_model("aio-reid") == str(link)
    locate.link_default(checkpoint)  # re-linking replaces the link


def test_aio_reid_model_variable_comes_first_and_a_folder_here_before_it(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("AIO_REID_MODEL", str(checkpoint))
    monkeypatch.chdir(tmp_path)
    assert locate.resolve_model("aio-reid") == str(checkpoint)
    monkeypatch.chdir(checkpoint.parent)
    assert locate.resolve_model("aio-reid") == "aio-reid"


def test_offline_errors_come_at_once_and_say_what_to_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("AIO_REID_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("AIO_REID_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(locate, "hub_reachable", lambda timeout=3.0: pytest.fail("asked the network while offline"))
    started = time.monotonic()
    with pytest.raises(FileNotFoundError, match="make demo.*--model PATH"):
        locate.resolve_model("aio-reid")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE is set"):
        locate.resolve_model("someone/aio-reid")
    assert time.monotonic() - started < 1.0


def test_an_unreachable_hub_is_said_so(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(locate, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="cannot be reached"):
        locate.resolve_model("someone/aio-reid")
    monkeypatch.setattr(locate, "hub_reachable", lambda timeout=3.0: True)
    assert locate.resolve_model("someone/aio-reid") == "someone/aio-reid"


def test_a_file_is_not_a_checkpoint(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="is a file; pass a checkpoint folder"):
        locate.resolve_model(tmp_path / "model.safetensors")
