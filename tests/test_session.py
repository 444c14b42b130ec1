"""Sessions: save and resume, atomic writes, and the path policy for model-written paths."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from agent.session import SESSION_FILE, Session
from tests.conftest import write_tif
from tools.errors import ArgumentError


@pytest.fixture
def scene_file(tmp_path):
    (tmp_path / "inputs").mkdir()
    data = np.random.default_rng(0).integers(1, 3000, (4, 16, 16)).astype("uint16")
    return write_tif(
        tmp_path / "inputs" / "my scene.tif", data, descriptions=["blue", "green", "red", "nir"]
    )


@pytest.fixture
def session(tmp_path, scene_file):
    s = Session.create(tmp_path / "ws", "abc")
    s.load(scene_file, "post")
    return s


def test_save_and_resume(tmp_path, session, scene_file):
    session.messages += [
        HumanMessage("hello"),
        AIMessage("", tool_calls=[{"name": "scene_info", "args": {"scene": "post"}, "id": "c1"}]),
        ToolMessage("{}", tool_call_id="c1", artifact={"handle": "info_1"}),
    ]
    session.save()
    again = Session.resume(tmp_path / "ws", "abc")
    assert again.state.files["post"].path == str(scene_file.resolve())
    assert [m.type for m in again.messages] == ["human", "ai", "tool"]
    assert again.messages[1].tool_calls[0]["name"] == "scene_info"
    assert again.messages[2].artifact == {"handle": "info_1"}
    assert again.scene("post").band_names == ["blue", "green", "red", "nir"]


def test_open_resumes_or_creates(tmp_path, session):
    session.save()
    assert Session.open(tmp_path / "ws", "abc").state.files.keys() == {"post"}
    assert Session.open(tmp_path / "ws", "new-one").state.files == {}
    with pytest.raises(ArgumentError, match="No session 'missing'"):
        Session.resume(tmp_path / "ws", "missing")
    with pytest.raises(ArgumentError, match="letters, digits"):
        Session.create(tmp_path / "ws", "../escape")


def test_save_is_atomic(tmp_path, session, monkeypatch):
    session.messages.append(HumanMessage("first"))
    session.save()
    path = session.workspace / SESSION_FILE
    before = path.read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    session.messages.append(HumanMessage("second"))
    with pytest.raises(OSError, match="disk full"):
        session.save()
    assert path.read_text() == before
    assert json.loads(before)["messages"][-1]["data"]["content"] == "first"
    assert [p.name for p in session.workspace.iterdir() if p.name.startswith(".session.")] == []


def test_default_handles_and_aliases(tmp_path, session, scene_file):
    other = Session.create(tmp_path / "ws", "def")
    assert other.load(scene_file) == "my_scene"
    assert other.load(scene_file) == "my_scene_2"
    for ref in ("post", "POST", " 'post' ", "$post", "my scene.tif"):
        assert session.scene_handle(ref) == "post"
    with pytest.raises(ArgumentError, match="Did you mean post"):
        session.scene_handle("postt")


def test_results_get_numbered_handles(session):
    from tools.bindings import LookupResult

    for expected in ("flood_1", "flood_2"):
        assert session.begin_call("flood") == expected
        session.output_path(".tif").write_bytes(b"x")
        stored = session.store_result("flood_map", {}, LookupResult(kind="x", name="y", data={}))
        assert stored.handle == expected and stored.files[0].endswith(f"{expected}.tif")
    assert session.result("Flood_1").handle == "flood_1"
    assert session.result("flood1").handle == "flood_1"
    with pytest.raises(ArgumentError, match="is a loaded file"):
        session.result("post")


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "/etc/passwd", "results/../../x.tif", "~/.ssh/id_rsa", ""]
)
def test_paths_outside_are_refused(session, bad):
    with pytest.raises(ArgumentError, match="refused|malformed"):
        session.safe_path(bad)
    with pytest.raises(ArgumentError):
        session.scene_handle(bad or "/")


def test_symlink_escape_is_refused(tmp_path, session):
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key.tif").write_bytes(b"secret")
    (session.workspace / "link").symlink_to(outside)
    with pytest.raises(ArgumentError, match="outside this session's workspace"):
        session.safe_path("link/key.tif")
    with pytest.raises(ArgumentError):
        session.export_path("../link/key.tif")


def test_allowed_paths(session, scene_file):
    inside = session.safe_path("results/x.tif", write=True)
    assert session.workspace in inside.parents
    assert session.safe_path(str(scene_file)) == scene_file.resolve()  # a loaded file: readable
    with pytest.raises(ArgumentError):
        session.safe_path(str(scene_file), write=True)  # ...but never written to
    assert session.scene_handle(str(scene_file)) == "post"
