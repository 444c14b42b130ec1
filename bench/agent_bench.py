"""The embedded (local) brain: start-up, speed, a one-tool turn per lever, accuracy.

    python bench/agent_bench.py [--out bench/agent_bench.json] [--threads N] [--quick]
                                [--adapter DIR]

- cold start: GGUF -> safetensors conversion into a temporary cache, load, prefix
  prefill (in a child process, so its peak RSS is its own);
- warm start: load of the cached safetensors, and the prefix prefill;
- prefill and decode tokens/s (decode with the fp32 and the int8 LM head);
- one tool-calling turn (the call, then the answer after a fixed tool result), warm,
  for each lever added in turn: no cache/free decoding (the baseline), + prefix cache,
  + constrained calls, + int8 head;
- tool-name (and argument) accuracy on bench/data/tool_requests.jsonl, no adapter,
  with and without the name calibration.
With `--adapter DIR` the model has that LoRA adapter merged (as `from_settings` loads
the bundled one, so without name calibration) and the turns and the accuracy are its.
The machine's load average is recorded beside the figures: they are only comparable
between runs on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
REQUESTS = REPO / "bench" / "data" / "tool_requests.jsonl"
TURN_REQUEST = "How many hectares were flooded between pre and post?"
TOOL_RESULT = json.dumps(
    {
        "handle": "flood_1",
        "flooded_area_ha": 231.73,
        "permanent_water_ha": 12.5,
        "water_fraction": 0.1234,
        "method": "optical",
        "output": "/tmp/flood_1.tif",
    }
)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def session_system(handles: dict[str, str], results: list[str] | None = None) -> str:
    from agent.settings import Settings

    lines = [f"{h}: {kind} {h}.tif" for h, kind in handles.items()]
    lines += [f"{r}: result of a tool" for r in results or []]
    return Settings().system_prompt() + "\n\nIn this session:\n" + "\n".join(lines)


def cold_start(cache: Path) -> dict[str, Any]:
    from agent.brains.local import LocalBrain, convert_gguf, load_model
    from agent.settings import Settings
    from tools.registry import get_registry

    started = time.perf_counter()
    convert_gguf(cache)
    converted = time.perf_counter()
    model, tokenizer = load_model(cache)
    brain = LocalBrain(model, tokenizer)
    brain.warm_up(Settings().system_prompt(), list(get_registry()))
    done = time.perf_counter()
    return {
        "convert_s": converted - started,
        "load_and_prefix_s": done - converted,
        "total_s": done - started,
        "peak_rss_mb": peak_rss_mb(),
    }


def one_turn(brain: Any, tools: list[Any]) -> dict[str, Any]:
    from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage

    messages = [
        SystemMessage(session_system({"pre": "scene", "post": "scene"})),
        HumanMessage(TURN_REQUEST),
    ]
    started = time.perf_counter()
    call = brain.respond(messages, tools)
    call_s = time.perf_counter() - started
    call_stats = dict(brain.last_stats)
    name = call.tool_calls[0]["name"] if call.tool_calls else "flood_map"
    result = ToolMessage(
        content=TOOL_RESULT,
        tool_call_id=call.tool_calls[0]["id"] if call.tool_calls else "x",
        name=name,
    )
    started = time.perf_counter()
    answer = brain.respond([*messages, call, result], tools)
    answer_s = time.perf_counter() - started
    return {
        "turn_s": call_s + answer_s,
        "call_s": call_s,
        "answer_s": answer_s,
        "call": call.tool_calls[0] if call.tool_calls else call.text[:200],
        "answer": answer.text[:300],
        "call_stats": call_stats,
        "answer_stats": dict(brain.last_stats),
    }


def speed(model: Any, tokenizer: Any) -> dict[str, float]:
    import torch

    from agent.brains.local import TokenStream, int8_linear

    weight = model.lm_head.weight
    ids = tokenizer("The flood covered the valley. " * 50, add_special_tokens=False).input_ids
    ids = [tokenizer.bos_token_id, *ids[:299]]
    stream = TokenStream.empty(model, lambda h: h @ weight.T)
    stream.push(ids)
    started = time.perf_counter()
    stream.flush()
    prefill = len(ids) / (time.perf_counter() - started)
    out: dict[str, float] = {"prefill_tokens": len(ids), "prefill_tok_s": prefill}
    for label, head in (("fp32", lambda h: h @ weight.T), ("int8", int8_linear(weight))):
        stream.head = head
        started = time.perf_counter()
        for _ in range(16):
            stream.push([stream.argmax()])
        out[f"decode_tok_s_{label}_head"] = 16 / (time.perf_counter() - started)
    with torch.inference_mode():
        stream.flush()
        started = time.perf_counter()
        for _ in range(10):
            stream.score(list(range(1000, 1012)))
        out["score_12_tokens_ms"] = (time.perf_counter() - started) / 10 * 1000
    return out


def accuracy(brain: Any, tools: list[Any]) -> dict[str, Any]:
    from langchain_core.messages import HumanMessage, SystemMessage

    rows = [json.loads(line) for line in REQUESTS.read_text().splitlines() if line.strip()]
    names = args_ok = 0
    seconds = 0.0
    details = []
    for row in rows:
        messages = [
            SystemMessage(session_system(row["handles"], row.get("results"))),
            HumanMessage(row["request"]),
        ]
        started = time.perf_counter()
        message = brain.respond(messages, tools)
        seconds += time.perf_counter() - started
        call = message.tool_calls[0] if message.tool_calls else None
        got = call["name"] if call else None
        names += got == row["expected_tool"]
        args_ok += (
            bool(call) and got == row["expected_tool"] and call["args"] == row["expected_args"]
        )
        details.append({"request": row["request"], "expected": row["expected_tool"], "got": got})
    return {
        "tool_name_correct": names,
        "args_exact": args_ok,
        "n": len(rows),
        "mean_call_s": seconds / len(rows),
        "details": details,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "agent_bench.json")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--quick", action="store_true", help="skip the cold start and the baseline")
    parser.add_argument(
        "--adapter", type=Path, help="merge this LoRA adapter (e.g. finetune/adapters/local)"
    )
    parser.add_argument("--cold-into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cold_into:  # the child process of the cold-start measurement
        print(json.dumps(cold_start(args.cold_into)))
        return
    report: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_avg_start": os.getloadavg(),
        "adapter": str(args.adapter) if args.adapter else None,
    }
    if not args.quick:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, __file__, "--cold-into", str(Path(tmp) / "gemma")]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            child = subprocess.run(cmd, capture_output=True, text=True, check=True)
            report["cold_start"] = json.loads(child.stdout.strip().splitlines()[-1])

    from agent.brains.local import build_brain, cache_dir, convert_gguf, is_converted, load_model
    from agent.settings import Settings
    from tools.registry import get_registry

    tools = list(get_registry())
    if not is_converted(cache_dir()):
        convert_gguf(cache_dir())
    cpu0, started = time.process_time(), time.perf_counter()
    model, tokenizer = load_model(cache_dir(), args.adapter)
    loaded = time.perf_counter()
    brain = build_brain(model, tokenizer, args.adapter)  # as from_settings builds it
    brain.warm_up(Settings().system_prompt(), tools)
    report["warm_start"] = {
        "load_s": loaded - started,
        "prefix_prefill_s": time.perf_counter() - loaded,
        "prefix_tokens": len(next(iter(brain._prefixes))),
    }
    report["speed"] = speed(model, tokenizer)

    levers = {
        "baseline_no_cache_free_decoding": dict(
            reuse_cache=False, constrained=False, int8_head=False
        ),
        "prefix_cache": dict(reuse_cache=True, constrained=False, int8_head=False),
        "prefix_cache_constrained": dict(reuse_cache=True, constrained=True, int8_head=False),
        "all_levers": dict(reuse_cache=True, constrained=True, int8_head=True),
        "constrained_no_cache": dict(reuse_cache=False, constrained=True, int8_head=True),
    }
    if args.quick:
        levers = {k: v for k, v in levers.items() if "baseline" not in k}
    turns: dict[str, Any] = {}
    for label, options in levers.items():
        candidate = build_brain(model, tokenizer, args.adapter, **options)
        candidate.warm_up(Settings().system_prompt(), tools)
        one_turn(candidate, tools)  # warms the caches and the allocator
        turns[label] = one_turn(candidate, tools)
    report["one_tool_turn"] = turns
    if args.adapter:
        report["accuracy_adapter"] = accuracy(brain, tools)
    else:
        report["accuracy_no_adapter"] = accuracy(brain, tools)
        report["accuracy_no_adapter_uncalibrated"] = accuracy(
            build_brain(model, tokenizer, None, calibrate=False), tools
        )
    report["peak_rss_mb_warm_process"] = peak_rss_mb()
    report["cpu_s_per_wall_s"] = (time.process_time() - cpu0) / (time.perf_counter() - started)
    report["load_avg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    summary = {k: turns[k]["turn_s"] for k in turns}
    print(
        json.dumps(
            {
                "one_tool_turn_s": summary,
                "accuracy": (report.get("accuracy_adapter") or report["accuracy_no_adapter"])[
                    "tool_name_correct"
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
