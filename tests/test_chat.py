"""The terminal chat: images by handle, streamed tool activity, resume by session id."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from agent.chat import chat, parse_image_arg
from agent.settings import Settings
from tests.conftest import write_tif
from tools.errors import ArgumentError


def _lines(*lines: str):
    feed = iter(lines)

    def read(prompt: str) -> str:
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    return read


def test_parse_image_arg(tmp_path):
    assert parse_image_arg("post=a/b.tif") == ("post", tmp_path.__class__("a/b.tif"))
    assert parse_image_arg("a/b.tif")[0] is None
    with pytest.raises(ArgumentError):
        parse_image_arg("post=")


def test_chat_session_and_resume(tmp_path):
    data = np.random.default_rng(3).integers(1, 3000, (4, 16, 16)).astype("uint16")
    path = write_tif(tmp_path / "post.tif", data, descriptions=["blue", "green", "red", "nir"])
    plan = [
        {
            "calls": [{"name": "scene_info", "args": {"scene": "post"}}],
            "answer": "{info_1.width} px",
        },
        {"calls": [], "answer": "still {info_1.width} px"},
    ]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    settings = Settings(
        backend="scripted", script_path=tmp_path / "plan.json", workspace_dir=tmp_path / "ws"
    )
    out = io.StringIO()
    assert (
        chat(
            settings,
            images=[f"post={path}"],
            session_id="c1",
            input_fn=_lines("how wide?", "/handles", "/quit"),
            out=out,
        )
        == 0
    )
    text = out.getvalue()
    assert "loaded post" in text and "-> scene_info(scene='post')" in text
    assert "ok scene_info -> info_1" in text and "eoagent> 16 px" in text
    assert "info_1: result of scene_info" in text

    out = io.StringIO()
    chat(settings, session_id="c1", input_fn=_lines("and now?"), out=out)
    assert "eoagent> still 16 px" in out.getvalue()
