"""End-to-end `eoagent run` throughput on a 20-task file over the bundled demo scenes.

The same tasks run twice in one process: with the scripted brain replaying the expected
tool calls (the cost of the tools and the loop alone: the baseline) and with the
configured brain (default: the embedded local brain). Reports seconds per task, tasks
per minute, the brain's share of the time, tool calls that ran, and how often the brain
chose the expected tool.

    python bench/run_bench.py [--backend local] [--out bench/run_bench.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agent.runner import run_tasks  # noqa: E402
from agent.settings import Settings  # noqa: E402
from tools.demo_data import make_demo_scenes  # noqa: E402

# (request, expected tool, its arguments)
REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("What sensor and date is the post scene?", "scene_info", {"scene": "post"}),
    ("Describe the pre image.", "scene_info", {"scene": "pre"}),
    ("Compute NDVI on pre.", "spectral_index", {"scene": "pre", "index": "NDVI"}),
    ("What is the mean MNDWI of post?", "spectral_index", {"scene": "post", "index": "MNDWI"}),
    ("NBR for the post scene please", "spectral_index", {"scene": "post", "index": "NBR"}),
    ("How much water is in post?", "water_mask", {"scenes": ["post"]}),
    ("Map surface water on post with the radar too", "water_mask", {"scenes": ["post", "sar"]}),
    (
        "How much land was flooded between pre and post?",
        "flood_map",
        {"post": ["post"], "pre": ["pre"]},
    ),
    ("flood extent post vs pre, hectares", "flood_map", {"post": ["post"], "pre": ["pre"]}),
    (
        "Map the new flood water using post and sar",
        "flood_map",
        {"post": ["post", "sar"], "pre": ["pre"]},
    ),
    (
        "How severe is the burn between pre and post?",
        "burn_severity",
        {"pre": "pre", "post": "post"},
    ),
    ("burned area in ha?", "burn_severity", {"pre": "pre", "post": "post"}),
    (
        "Where was vegetation lost between pre and post?",
        "vegetation_change",
        {"pre": "pre", "post": "post"},
    ),
    ("vegetation gain or loss, pre to post", "vegetation_change", {"pre": "pre", "post": "post"}),
    ("What changed between pre and post?", "change_detection", {"pre": "pre", "post": "post"}),
    ("Detect any change from pre to post", "change_detection", {"pre": "pre", "post": "post"}),
    ("Classify the land cover of post.", "land_cover", {"scene": "post"}),
    ("What are the land cover shares in pre?", "land_cover", {"scene": "pre"}),
    ("What is the formula of NDWI?", "domain_lookup", {"topic": "NDWI"}),
    ("Which bands does Sentinel-2 L2A have?", "domain_lookup", {"topic": "sentinel2_l2a"}),
]


def write_tasks(folder: Path) -> tuple[Path, Path]:
    scenes = make_demo_scenes(folder / "scenes")
    images = {"pre": str(scenes.pre), "post": str(scenes.post), "sar": str(scenes.post_sar)}
    tasks = folder / "tasks.jsonl"
    plan: dict[str, Any] = {"tasks": {}}
    with tasks.open("w") as out:
        for i, (request, tool, args) in enumerate(REQUESTS, start=1):
            task_id = f"t{i:02d}"
            out.write(
                json.dumps({"id": task_id, "images": images, "turns": [{"user": request}]}) + "\n"
            )
            plan["tasks"][task_id] = [{"calls": [{"name": tool, "args": args}], "answer": "done"}]
    plan_path = folder / "plan.json"
    plan_path.write_text(json.dumps(plan))
    return tasks, plan_path


def run(backend: str, tasks: Path, plan: Path, work: Path) -> dict[str, Any]:
    settings = Settings(backend=backend, script_path=plan, workspace_dir=work / f"ws-{backend}")
    out = work / f"results-{backend}.jsonl"
    started = time.perf_counter()
    summary = run_tasks(tasks, out, settings=settings, progress=True)
    seconds = time.perf_counter() - started
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    calls = [c for line in lines for turn in line["turns"] for c in turn["tool_calls"]]
    first_tools = [
        (
            line["turns"][0]["tool_calls"][0]["name"]
            if line["turns"] and line["turns"][0]["tool_calls"]
            else None
        )
        for line in lines
    ]
    expected = [tool for _, tool, _ in REQUESTS]
    return {
        "backend": backend,
        "tasks": summary.tasks,
        "failed_tasks": summary.failed,
        "seconds": round(seconds, 2),
        "seconds_per_task": round(seconds / summary.tasks, 3),
        "tasks_per_minute": round(60 * summary.tasks / seconds, 2),
        "tool_calls": len(calls),
        "tool_calls_ok": sum(bool(c["ok"]) for c in calls),
        "expected_tool_chosen": sum(a == b for a, b in zip(first_tools, expected, strict=True)),
        "misses": [
            f"{request} -> {got} (expected {want})"
            for (request, want, _), got in zip(REQUESTS, first_tools, strict=True)
            if got != want
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="local", help="the brain measured against scripted")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tasks, plan = write_tasks(work)
        baseline = run("scripted", tasks, plan, work)
        measured = run(args.backend, tasks, plan, work)
    report = {
        "scripted_baseline": baseline,
        args.backend: measured,
        "brain_overhead_ratio": round(measured["seconds"] / baseline["seconds"], 2),
        "brain_share_of_time": round(1 - baseline["seconds"] / measured["seconds"], 3),
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
