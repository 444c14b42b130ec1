"""Multi-turn disaster-response conversations through `eoagent run`, scored per turn.

bench/data/disaster_tasks.jsonl holds eleven hand-written tasks (25 turns) in the
DESIGN.md task format, each turn with the tool a person would expect (`null`: no
tool). A turn marked `expect_failure` asks for a tool that cannot run here (grounding
without weights): its answer must pass the failure on, not invent a result. Their
wording was written for this bench, not drawn from the fine-tuning templates. The
image paths are placeholders filled with the generated demo scenes (`{pre}`, `{post}`,
`{sar}`) and footprints made here (`{footprints}`: a grid of 30 m squares over the
scene), so the bench needs no sample data.

Each turn runs in the real loop with the conversation so far, as `eoagent run` does.
Reported per brain: right first tool per turn, turns whose calls all ran, tool turns
whose answer quotes a number, right-tool turns whose answer holds the words the turn
lists in `answer_mentions` (what was asked for: "destroyed", ".geojson", "Sentinel-1"),
seconds per turn.

    python bench/conversation_bench.py [--adapter DIR ...] [--out bench/conversation_bench.json]
"""

from __future__ import annotations

import argparse
import json
import re
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
from tools.demo_data import CRS, SIZE, TRANSFORM, make_demo_scenes  # noqa: E402

TASKS = REPO / "bench" / "data" / "disaster_tasks.jsonl"
NUMBER = re.compile(r"\d")


def write_footprints(path: Path, step_px: int = 25, side_m: float = 30.0) -> Path:
    """Square 'buildings' on a regular grid over the demo scene, as GeoJSON (EPSG:4326)."""
    from rasterio.warp import transform_geom
    from shapely.geometry import box, mapping

    features = []
    for row in range(step_px // 2, SIZE, step_px):
        for col in range(step_px // 2, SIZE, step_px):
            x, y = TRANSFORM @ (col, row)
            square = mapping(box(x, y - side_m, x + side_m, y))
            features.append(
                {
                    "type": "Feature",
                    "properties": {"id": len(features)},
                    "geometry": transform_geom(CRS, "EPSG:4326", square),
                }
            )
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def write_tasks(folder: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The task file with real paths, and the expected tool of every turn."""
    scenes = make_demo_scenes(folder / "scenes")
    paths = {
        "{pre}": str(scenes.pre),
        "{post}": str(scenes.post),
        "{sar}": str(scenes.post_sar),
        "{footprints}": str(write_footprints(folder / "footprints.geojson")),
    }
    tasks = [json.loads(line) for line in TASKS.read_text().splitlines() if line.strip()]
    out = folder / "tasks.jsonl"
    with out.open("w") as handle:
        for task in tasks:
            images = {h: paths[p] for h, p in task["images"].items()}
            handle.write(json.dumps({**task, "images": images}) + "\n")
    return out, tasks


def score(results: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> dict[str, Any]:
    by_id = {r["id"]: r for r in results}
    rows = []
    for task in tasks:
        done = by_id.get(task["id"], {}).get("turns", [])
        for k, turn in enumerate(task["turns"]):
            record = done[k] if k < len(done) else {"tool_calls": [], "answer": ""}
            calls = record["tool_calls"]
            first = calls[0]["name"] if calls else None
            rows.append(
                {
                    "task": task["id"],
                    "user": turn["user"],
                    "expected": turn["expected_tool"],
                    "got": [c["name"] for c in calls],
                    "right_tool": first == turn["expected_tool"],
                    "calls_ok": all(c["ok"] for c in calls),
                    "expect_failure": bool(turn.get("expect_failure")),
                    "answer": record.get("answer", "")[:300],
                    "states": all(
                        w.lower() in record.get("answer", "").lower()
                        for w in turn.get("answer_mentions", [])
                    ),
                }
            )
    tool_rows = [r for r in rows if r["expected"] and not r["expect_failure"]]
    failing = [r for r in rows if r["expect_failure"]]
    return {
        "turns": len(rows),
        "right_tool": sum(r["right_tool"] for r in rows),
        "right_tool_share": round(sum(r["right_tool"] for r in rows) / len(rows), 3),
        "calls_all_ok_turns": sum(r["calls_ok"] and bool(r["got"]) for r in tool_rows),
        "tool_turns": len(tool_rows),
        "answers_with_numbers": sum(
            bool(NUMBER.search(r["answer"])) for r in tool_rows if r["right_tool"]
        ),
        # the answer names what was asked for: "destroyed" for a damage question, the
        # file's extension for an export, "Sentinel-1" for the radar scene's sensor
        "answers_stating_it": sum(r["states"] for r in rows if r["right_tool"]),
        # the tool could not run, and the answer says why ("needs model weights")
        "failure_turns": len(failing),
        "failures_relayed": sum(
            r["right_tool"] and not r["calls_ok"] and r["states"] for r in failing
        ),
        "failed_tasks": sum(bool(r.get("error")) for r in results),
        "rows": rows,
    }


def run(label: str, settings: Settings, tasks_path: Path, tasks: list[dict[str, Any]], work: Path):
    out = work / f"results-{label}.jsonl"
    started = time.perf_counter()
    run_tasks(tasks_path, out, settings=settings, progress=True)
    seconds = time.perf_counter() - started
    results = [json.loads(line) for line in out.read_text().splitlines()]
    report = score(results, tasks)
    report["seconds"] = round(seconds, 1)
    report["seconds_per_turn"] = round(seconds / report["turns"], 2)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="local", help="the brain to run")
    parser.add_argument(
        "--adapter",
        type=Path,
        action="append",
        default=[],
        help="adapter folder(s) for the local brain; the bundled one when none is given",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    adapters: list[Path | None] = list(args.adapter) or [None]
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tasks_path, tasks = write_tasks(work)
        for n, adapter in enumerate(adapters):
            label = f"{args.backend}:{adapter or 'bundled'}"
            settings = Settings(
                backend=args.backend, adapter_path=adapter, workspace_dir=work / f"ws-{n}"
            )
            report[label] = run(f"run{n}", settings, tasks_path, tasks, work)
    args.out.write_text(json.dumps(report, indent=2))
    for label, body in report.items():
        summary = {k: v for k, v in body.items() if k != "rows"}
        print(label, json.dumps(summary))
        for row in body["rows"]:
            mark = "ok " if row["right_tool"] else "MISS"
            print(f"  {mark} {row['expected']!s:18} <- {row['got']} | {row['user'][:70]}")
            if row["right_tool"] and not row["states"]:
                print(f"       answer lacks what was asked: {row['answer'][:150]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
