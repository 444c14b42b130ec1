"""Tool-call accuracy of the local brain, base (few-shot prompt) and with the adapter.

    eoagent evaluate                      # held-out phrasing split + bench requests
    eoagent evaluate --tasks TASKS.jsonl  # turns with "expected_tool"/"expected_args"

Each item is a conversation up to the step to predict and what that step should be
(a tool and its arguments, or no tool). The brain answers it exactly as in the agent
loop (`LocalBrain.respond`, constrained calls). Metrics, side by side per model:

- valid_call_rate: share of tool-expecting items whose first call names a registered
  tool with arguments its Args model accepts;
- tool_name_accuracy: share of tool-expecting items whose first call has the right name;
- argument_accuracy: expected argument fields predicted equal (after the Args model's
  own normalisation, e.g. "post" -> ["post"]), over all expected fields;
- args_exact: share of tool-expecting items with the right name and exactly the
  expected arguments (defaults aside);
- no_tool_accuracy: share of items that need no tool answered without a call.

`score` works on prediction records alone, so a file of predictions can be scored
without a model (`score_file`).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

REPO = Path(__file__).resolve().parents[1]
BENCH_REQUESTS = REPO / "bench" / "data" / "tool_requests.jsonl"


class EvalConfig(BaseModel):
    """What `eoagent evaluate` measures; the same object drives the CLI."""

    model_config = ConfigDict(extra="forbid")

    split: Literal["test", "validation", "train", "none"] = Field(
        default="test",
        description="Conversations from the registry builder to evaluate on (test: "
        "held-out phrasing families and intents; validation: other families and intents, "
        "never trained on, for choosing checkpoints), or none.",
    )
    data: Path | None = Field(
        default=None, description="Conversations JSONL (finetune.data.Example) instead of a split."
    )
    tasks: Path | None = Field(
        default=None,
        description="Task JSONL (DESIGN.md format); turns with 'expected_tool' (null: no "
        "tool) and optional 'expected_args' are scored.",
    )
    requests: Path | None = Field(
        default=BENCH_REQUESTS,
        description="Bench requests JSONL (bench/data/tool_requests.jsonl); 'none' skips them.",
    )
    adapter: Path | None = Field(
        default=None, description="Adapter to evaluate; the bundled one when unset."
    )
    compare_base: bool = Field(default=True, description="Also evaluate the base model.")
    route_weight: float | None = Field(
        default=None,
        ge=0,
        description="Weight of the adapter's tool router (tool_router.npz) in the choice "
        "to call and of the tool name; 0 turns it off; unset: the local brain's default.",
    )
    limit: int | None = Field(default=60, ge=1, description="Most split items evaluated.")
    n_test: int = Field(default=300, ge=1, description="Conversations built for the split.")
    seed: int = Field(default=0, description="Seed of the split.")
    out: Path | None = Field(default=None, description="Write the full report (JSON) here.")


@dataclass
class Item:
    id: str
    group: str  # split, requests, tasks
    kind: str
    messages: list[Any]
    expected_tool: str | None
    expected_args: dict[str, Any] = field(default_factory=dict)


# -- items --------------------------------------------------------------------------


def split_items(examples: Sequence[Any], system_prompt: str, group: str = "split") -> list[Item]:
    from finetune.data import final_step, to_messages

    items = []
    for example in examples:
        step = final_step(example)
        row = example.messages[step]
        call = (row.get("tool_calls") or [None])[0]
        items.append(
            Item(
                id=example.id,
                group=group,
                kind=example.kind,
                messages=to_messages(example, system_prompt, upto=step),
                expected_tool=call["name"] if call else None,
                expected_args=call["args"] if call else {},
            )
        )
    return items


def _session_system(system_prompt: str, handles: dict[str, str], results: Iterable[str]) -> str:
    lines = [f"{h}: {kind} {h}.tif" for h, kind in handles.items()]
    lines += [f"{r}: result of a tool" for r in results]
    return system_prompt + "\n\nIn this session:\n" + "\n".join(lines)


def request_items(path: Path, system_prompt: str) -> list[Item]:
    """bench/data/tool_requests.jsonl: one request, its handles, expected call."""
    from langchain_core.messages import HumanMessage, SystemMessage

    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        system = _session_system(system_prompt, row["handles"], row.get("results", []))
        items.append(
            Item(
                id=f"request-{n}",
                group="requests",
                kind="call",
                messages=[SystemMessage(system), HumanMessage(row["request"])],
                expected_tool=row.get("expected_tool"),
                expected_args=row.get("expected_args") or {},
            )
        )
    return items


def task_items(path: Path, system_prompt: str) -> list[Item]:
    """Turns of a DESIGN.md task file that carry an expectation, each asked on its own
    with the task's handles (a .geojson/.json path is a vector, anything else a scene)."""
    from langchain_core.messages import HumanMessage, SystemMessage

    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        task = json.loads(line)
        handles = {
            h: "vector" if str(p).lower().endswith((".geojson", ".json")) else "scene"
            for h, p in task.get("images", {}).items()
        }
        for k, turn in enumerate(task.get("turns", [])):
            if "expected_tool" not in turn:
                continue
            system = _session_system(system_prompt, handles, turn.get("results", []))
            items.append(
                Item(
                    id=f"{task['id']}-{k}",
                    group="tasks",
                    kind="call" if turn["expected_tool"] else "no_tool",
                    messages=[SystemMessage(system), HumanMessage(turn["user"])],
                    expected_tool=turn["expected_tool"],
                    expected_args=turn.get("expected_args") or {},
                )
            )
    return items


# -- scoring ------------------------------------------------------------------------


def _normalised(name: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """Arguments as the Args model reads them, or None when it rejects them."""
    from pydantic import ValidationError

    from tools.registry import get_registry

    registry = get_registry()
    if name not in registry or not isinstance(args, dict):
        return None
    try:
        return registry[name].args_model.model_validate(args).model_dump(mode="json")
    except ValidationError:
        return None


def score(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Metrics from records {expected_tool, expected_args, predicted: {calls: [{name,
    args}], invalid_calls: int, text: str}}."""
    want_tool = [r for r in records if r["expected_tool"]]
    no_tool = [r for r in records if not r["expected_tool"]]
    valid = names = exact = fields_ok = fields_total = 0
    confusions: Counter[str] = Counter()  # "expected -> chosen" for the wrong tool names
    for record in want_tool:
        calls = record["predicted"].get("calls") or []
        first = calls[0] if calls else None
        expected_name = record["expected_tool"]
        if first is None or first["name"] != expected_name:
            confusions[f"{expected_name} -> {first['name'] if first else 'no call'}"] += 1
        expected = _normalised(expected_name, record.get("expected_args") or {}) or dict(
            record.get("expected_args") or {}
        )
        given = {} if first is None else (_normalised(first["name"], first.get("args") or {}))
        if first is not None and given is not None:
            valid += 1
        if first is None or first["name"] != expected_name:
            fields_total += len(record.get("expected_args") or {})
            continue
        names += 1
        got = given if given is not None else dict(first.get("args") or {})
        keys = list((record.get("expected_args") or {}).keys())
        fields_total += len(keys)
        fields_ok += sum(got.get(k) == expected.get(k) for k in keys)
        # both sides carry the Args model's defaults, so equal dicts = same call
        exact += given is not None and given == expected
    no_call = sum(
        1
        for r in no_tool
        if not (r["predicted"].get("calls") or r["predicted"].get("invalid_calls"))
    )
    n = len(want_tool)
    return {
        "items": len(records),
        "tool_items": n,
        "no_tool_items": len(no_tool),
        "valid_call_rate": valid / n if n else None,
        "tool_name_accuracy": names / n if n else None,
        "argument_accuracy": fields_ok / fields_total if fields_total else None,
        "args_exact": exact / n if n else None,
        "no_tool_accuracy": no_call / len(no_tool) if no_tool else None,
        "confusions": dict(confusions.most_common()),
    }


def score_file(path: Path) -> dict[str, Any]:
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    return score(rows)


# -- running a brain ----------------------------------------------------------------


def predict(brain: Any, items: Sequence[Item]) -> list[dict[str, Any]]:
    """One record per item: what the brain did at that step."""
    from tools.registry import get_registry

    tools = list(get_registry())
    records = []
    for item in items:
        started = time.perf_counter()
        try:
            message = brain.respond(item.messages, tools)
            predicted = {
                "calls": [{"name": c["name"], "args": c["args"]} for c in message.tool_calls],
                "invalid_calls": len(message.invalid_tool_calls),
                "text": message.text[:300],
            }
        except Exception as exc:  # a failing item is scored as a miss, not a crash
            predicted = {"calls": [], "invalid_calls": 1, "text": f"{type(exc).__name__}: {exc}"}
        records.append(
            {
                "id": item.id,
                "group": item.group,
                "kind": item.kind,
                "request": item.messages[-1].text[:200],
                "expected_tool": item.expected_tool,
                "expected_args": item.expected_args,
                "predicted": predicted,
                "seconds": time.perf_counter() - started,
            }
        )
    return records


def collect_items(config: EvalConfig) -> list[Item]:
    from agent.settings import Settings
    from finetune.data import build_examples, read_jsonl
    from tools.registry import get_registry

    system = Settings().system_prompt()
    items: list[Item] = []
    if config.data is not None:
        items += split_items(read_jsonl(config.data), system)
    elif config.split != "none":
        examples = build_examples(list(get_registry()), config.n_test, config.split, config.seed)
        items += split_items(examples[: config.limit], system, group=config.split)
    if config.tasks is not None:
        items += task_items(config.tasks, system)
    if config.requests is not None and str(config.requests) != "none":
        items += request_items(config.requests, system)
    return items


def local_brain(adapter: Path | None, route_weight: float | None = None) -> Any:
    from agent.brains.local import build_brain, cache_dir, convert_gguf, is_converted, load_model
    from agent.settings import Settings
    from tools.registry import get_registry

    if not is_converted(cache_dir()):
        convert_gguf(cache_dir())
    model, tokenizer = load_model(cache_dir(), adapter)
    options = {} if route_weight is None else {"route_weight": route_weight}
    brain = build_brain(model, tokenizer, adapter, **options)
    brain.warm_up(Settings().system_prompt(), list(get_registry()))
    return brain


def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Predictions and metrics per model ('base', 'adapter') and per item group."""
    from agent.brains.local import BUNDLED_ADAPTER_DIR

    items = collect_items(config)
    adapter = config.adapter or BUNDLED_ADAPTER_DIR
    models: dict[str, Path | None] = {}
    if config.compare_base:
        models["base"] = None
    if (adapter / "adapter_config.json").is_file():
        models["adapter"] = adapter
    report: dict[str, Any] = {"items": len(items), "models": {}}
    for label, path in models.items():
        records = predict(local_brain(path, config.route_weight), items)
        groups = sorted({r["group"] for r in records})
        report["models"][label] = {
            "metrics": {g: score([r for r in records if r["group"] == g]) for g in groups},
            "mean_call_s": sum(r["seconds"] for r in records) / max(1, len(records)),
            "records": records,
        }
    if config.out is not None:
        config.out.parent.mkdir(parents=True, exist_ok=True)
        config.out.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    return report


def table(report: dict[str, Any]) -> str:
    """The metrics side by side as a Markdown table."""
    names = (
        "valid_call_rate",
        "tool_name_accuracy",
        "argument_accuracy",
        "args_exact",
        "no_tool_accuracy",
    )
    rows = [
        "| group | model | items | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for label, body in report["models"].items():
        for group, metrics in body["metrics"].items():
            cells = ["-" if metrics[n] is None else f"{metrics[n]:.3f}" for n in names]
            rows.append(f"| {group} | {label} | {metrics['items']} | " + " | ".join(cells) + " |")
    for label, body in report["models"].items():
        for group, metrics in body["metrics"].items():
            wrong = ", ".join(f"{k} ({n})" for k, n in metrics["confusions"].items())
            rows.append(f"\n{label} on {group}, wrong tools: {wrong or 'none'}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m finetune.evaluate [options]`: the same as `eoagent evaluate`."""
    import argparse

    from finetune.options import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(description="Tool-call accuracy, base vs adapter.")
    add_config_arguments(parser, EvalConfig)
    print(table(evaluate(config_from_args(EvalConfig, parser.parse_args(argv)))))


if __name__ == "__main__":
    main()
