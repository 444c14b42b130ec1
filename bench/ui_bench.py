"""The chat app as a user meets it: seconds from starting `python app.py` to the page
answering, then, for two questions on the bundled demo scene, seconds from sending to
the first streamed assistant text and to the final answer, with the configured brain
(default: the embedded local brain, cache already converted). The scripted brain runs
the same questions as the baseline (tools and UI without a model).

    python bench/ui_bench.py [--backend local] [--out bench/ui_bench.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

QUESTIONS = ("post=post.tif What is this scene?", "How much of post is water?")
PLAN = [
    {
        "calls": [{"name": "scene_info", "args": {"scene": "post"}}],
        "answer": "{info_1.sensor_title}",
    },
    {
        "calls": [{"name": "water_mask", "args": {"scenes": ["post"]}}],
        "answer": "{water_1.water_area_ha:.1f} ha",
    },
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _assistant_texts(history: list[dict[str, Any]]) -> list[str]:
    return [
        part.get("text", "")
        for m in history
        if m.get("role") == "assistant" and not (m.get("metadata") or {}).get("title")
        for part in m.get("content", [])
        if isinstance(part, dict) and part.get("type") == "text" and part.get("text")
    ]


def measure(backend: str, work: Path, scene: Path) -> dict[str, Any]:
    import httpx
    from gradio_client import Client, handle_file

    plan = work / "plan.json"
    plan.write_text(json.dumps(PLAN))
    port = _free_port()
    env = {
        **os.environ,
        "EOAGENT_BACKEND": backend,
        "EOAGENT_SCRIPT_PATH": str(plan),
        "EOAGENT_WORKSPACE_DIR": str(work / f"ws-{backend}"),
        "GRADIO_TEMP_DIR": str(work / "gradio"),
        "PYTHONWARNINGS": "ignore",
    }
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), "--port", str(port)],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    report: dict[str, Any] = {"backend": backend}
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app exited with {proc.returncode}")
            try:
                if httpx.get(f"{url}/config", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        report["start_to_page_s"] = round(time.perf_counter() - started, 2)
        client = Client(url, verbose=False)
        history: list[dict[str, Any]] = []
        for i, question in enumerate(QUESTIONS):
            files = [handle_file(str(scene))] if i == 0 else []
            sent = time.perf_counter()
            job = client.submit({"text": question, "files": files}, history, api_name="/chat")
            before = len(_assistant_texts(history))
            first = None
            for frame in job:
                if first is None and len(_assistant_texts(frame[0])) > before:
                    first = time.perf_counter() - sent
            history = job.result()[0]
            report[f"q{i + 1}"] = {
                "question": question,
                "first_text_s": round(first or float("nan"), 2),
                "final_s": round(time.perf_counter() - sent, 2),
                "answer": (_assistant_texts(history) or [""])[-1][:200],
            }
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="local")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    from tools.demo_data import make_demo_scenes

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        scene = work / "post.tif"
        scene.write_bytes(make_demo_scenes(work / "demo").post.read_bytes())
        report = {"scripted": measure("scripted", work, scene)}
        if args.backend != "scripted":
            report[args.backend] = measure(args.backend, work, scene)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
