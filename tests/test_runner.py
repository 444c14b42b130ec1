"""`run_tasks`: the RESULTS.jsonl format, failing tasks, and the scripted backend."""

from __future__ import annotations

import json

import numpy as np

from agent.runner import run_tasks
from agent.settings import Settings
from tests.conftest import write_tif


def test_run_tasks_writes_one_line_per_task(tmp_path):
    data = np.random.default_rng(2).integers(1, 3000, (4, 16, 16)).astype("uint16")
    write_tif(tmp_path / "post.tif", data, descriptions=["blue", "green", "red", "nir"])
    plan = {
        "tasks": {
            "ndvi": [
                {
                    "calls": [
                        {"name": "spectral_index", "args": {"scene": "post", "index": "NDVI"}}
                    ],
                    "answer": "Mean NDVI {ndvi_1.mean:.3f}.",
                },
                {
                    "calls": [{"name": "export", "args": {"result": "ndvi_1", "format": "png"}}],
                    "answer": "Saved {export_1.path}.",
                },
            ],
            "*": [{"calls": [{"name": "scene_info", "args": {"scene": "post"}}], "answer": "ok"}],
        }
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    tasks = [
        {
            "id": "ndvi",
            "images": {"post": "post.tif"},  # relative to the task file
            "turns": [{"user": "NDVI of post?"}, {"user": "Save it as an image."}],
        },
        {
            "id": "missing-image",
            "images": {"post": str(tmp_path / "nope.tif")},
            "turns": [{"user": "What is it?"}],
        },
        {"id": "no-turns", "turns": []},
        {
            "id": "default-plan",
            "images": {"post": str(tmp_path / "post.tif")},
            "turns": [{"user": "hi"}],
        },
    ]
    lines = [json.dumps(t) for t in tasks]
    lines.insert(2, "{not json")
    (tmp_path / "tasks.jsonl").write_text("\n".join(lines) + "\n\n")
    settings = Settings(
        backend="scripted", script_path=tmp_path / "plan.json", workspace_dir=tmp_path / "ws"
    )

    summary = run_tasks(
        tmp_path / "tasks.jsonl",
        tmp_path / "out" / "results.jsonl",
        settings=settings,
        progress=False,
    )

    assert (summary.tasks, summary.failed) == (5, 3)
    out = [
        json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    ]
    assert [r["id"] for r in out] == ["ndvi", "missing-image", "line-3", "no-turns", "default-plan"]
    assert not (tmp_path / "out" / "results.jsonl.part").exists()

    ndvi = out[0]
    assert ndvi["error"] is None and set(ndvi) == {"id", "turns", "error"}
    first, second = ndvi["turns"]
    assert set(first) == {"user", "tool_calls", "answer", "artifacts"}
    assert first["user"] == "NDVI of post?"
    assert first["tool_calls"] == [
        {"name": "spectral_index", "args": {"scene": "post", "index": "NDVI"}, "ok": True}
    ]
    assert first["answer"].startswith("Mean NDVI ") and first["artifacts"][0].endswith("ndvi_1.tif")
    assert second["artifacts"][0].endswith("exports/ndvi_1.png")

    assert (
        out[1]["turns"] == []
        and "InputFileError" in out[1]["error"]
        and "nope.tif" in out[1]["error"]
    )
    assert "line 3 is not a valid task" in out[2]["error"]
    assert "turns" in out[3]["error"]
    assert out[4]["error"] is None and out[4]["turns"][0]["answer"] == "ok"


def test_unavailable_backend_fails_each_task_cleanly(tmp_path):
    (tmp_path / "tasks.jsonl").write_text(json.dumps({"id": "a", "turns": [{"user": "hi"}]}) + "\n")
    summary = run_tasks(
        tmp_path / "tasks.jsonl",
        tmp_path / "r.jsonl",
        "scripted",
        settings=Settings(workspace_dir=tmp_path / "ws"),
        progress=False,
    )
    assert summary.failed == 1
    record = json.loads((tmp_path / "r.jsonl").read_text())
    assert "EOAGENT_SCRIPT_PATH" in record["error"]
