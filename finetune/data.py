"""Training and test conversations built from the tool registry itself.

For every tool in `REGISTRY` the builder draws argument values from the tool's Args
model and words a request for them (`finetune.wording`, with the phrasing families of
`finetune.phrasing` and the intents of `finetune.intents`), and writes the
conversation the agent would have: the user
asks, the assistant calls the tool in the canonical call format, the tool's result
comes back, and the assistant answers with its numbers. Some conversations go on
with a follow-up that names an earlier result by its handle (or by "it"); others
need no tool, or ask for something no tool can do and are declined.

Only arguments the local brain's constrained decoder can write are drawn (see
`agent.brains.constrained.call_arguments`), so every target call is one the embedded
model can produce. The split is by phrasing family and by intent phrase: a test
conversation's template family and intent wording never occur in training. A third
split, "validation", words requests in families and with intents that neither training
nor test uses (`VALIDATION_FAMILIES`, `finetune.intents.VALIDATION_INTENTS`), to
choose checkpoints without looking at the test split.

Also here: `convert_llava`, GeoChat/LLaVA instruction JSON -> chat messages with
image parts, for VLM training.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.phrasing import (
    DECLINE,
    FAMILIES,
    NO_TOOL,
    TEST_FAMILIES,
    VALIDATION_FAMILIES,
    Family,
    bank_split,
    hand_off_decline,
    misspell,
)
from finetune.results import answer_for, error_answer, fake_error, fake_result, shown_result
from finetune.wording import (
    Session,
    Split,
    draw_arguments,
    new_session,
    vary_one,
    word_ellipsis,
    word_request,
)

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

    from tools.registry import ToolSpec


@dataclass
class Example:
    """One conversation. `messages` are role dicts: user {content}; assistant
    {content, tool_calls: [{name, args}]}; tool {name, content}. The last assistant
    step that follows the last user message is what the test split measures."""

    id: str
    family: str
    style: str
    kind: str  # call, followup, ellipsis ("and NBR?"), no_tool, decline
    scenes: dict[str, str]  # handle -> kind (scene, vector)
    messages: list[dict[str, Any]]
    results: dict[str, str] = field(default_factory=dict)  # handle -> tool that made it

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Example:
        return cls(**json.loads(line))


@dataclass(frozen=True)
class BuildConfig:
    n_train: int = 3000
    n_test: int = 300
    seed: int = 0
    followup_share: float = 0.25
    no_tool_share: float = 0.06
    decline_share: float = 0.06
    ellipsis_share: float = 0.08
    error_share: float = 0.05  # of single calls in training: the tool fails (`fake_error`)


# -- conversations ----------------------------------------------------------------


def _call_turn(
    spec: ToolSpec,
    args: dict[str, Any],
    session: Session,
    rng: random.Random,
    failed: tuple[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The call, its result (or, with `failed`, its error) and the answer."""
    call = {"role": "assistant", "content": "", "tool_calls": [{"name": spec.name, "args": args}]}
    if failed is not None:  # nothing is stored; the answer relays the reason
        error, reason = failed
        return [
            call,
            {"role": "tool", "name": spec.name, "content": error},
            {"role": "assistant", "content": error_answer(spec, reason, rng), "tool_calls": []},
        ]
    handle = _next_handle(spec, args, session)
    shown = shown_result(handle, fake_result(spec, args, rng), rng, spec.name)
    session.results[handle] = spec.name
    return [
        call,
        {"role": "tool", "name": spec.name, "content": json.dumps(shown, ensure_ascii=False)},
        {"role": "assistant", "content": answer_for(spec, handle, shown, rng), "tool_calls": []},
    ]


def _asked_and_called(
    spec: ToolSpec,
    args: dict[str, Any],
    session: Session,
    family: Family,
    split: Split,
    rng: random.Random,
    refer_to_it: bool = False,
    failed: tuple[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The user's request for the call, then the call, its result (or its error, with
    `failed`) and the answer."""
    request = word_request(
        spec, args, family, split, rng, refer_to_it=refer_to_it, pair=session.pair
    )
    return [{"role": "user", "content": request}, *_call_turn(spec, args, session, rng, failed)]


def _next_handle(spec: ToolSpec, args: dict[str, Any], session: Session) -> str:
    prefix = spec.prefix_for(spec.args_model.model_validate(args))
    n = 1
    while f"{prefix}_{n}" in session.results or f"{prefix}_{n}" in session.scenes:
        n += 1
    return f"{prefix}_{n}"


def _families(split: Split) -> list[Family]:
    held = {"test": TEST_FAMILIES, "validation": VALIDATION_FAMILIES}
    if split in held:
        return [f for f in FAMILIES if f.name in held[split]]
    return [f for f in FAMILIES if f.name not in TEST_FAMILIES | VALIDATION_FAMILIES]


def build_examples(
    tools: Sequence[ToolSpec], n: int, split: Split, seed: int, config: BuildConfig | None = None
) -> list[Example]:
    """`n` conversations of one split, deterministic given the seed."""
    config = config or BuildConfig()
    rng = random.Random(f"{seed}-{split}")
    families = _families(split)
    result_tools = [s for s in tools if _takes_result(s)]
    scene_tools = [s for s in tools if not _takes_result(s)]
    # tools whose result is a map a follow-up can export or measure
    mapping_tools = [s for s in scene_tools if "output" in s.result_model().model_fields]
    quiet = config.no_tool_share + config.decline_share  # rolls below this need no tool
    examples: list[Example] = []
    attempts = 0
    while len(examples) < n and attempts < n * 20:
        attempts += 1
        family = rng.choice(families)
        session = new_session(rng)
        roll = rng.random()
        messages: list[dict[str, Any]] = []
        if roll < quiet:
            bank = NO_TOOL if roll < config.no_tool_share else DECLINE
            request, reply = rng.choice(bank_split(bank, split))
            kind = "no_tool" if bank is NO_TOOL else "decline"
            hand_off = bank is DECLINE and split == "train" and rng.random() < 0.5
            if hand_off and rng.random() < 0.3:  # "email the flood report" before any map
                spec = rng.choice(mapping_tools)
                request, reply = hand_off_decline(spec.name, None, rng)
            elif hand_off or rng.random() < 0.4:  # after an analysis: the model sees history
                spec = rng.choice(mapping_tools if hand_off else scene_tools)
                args = draw_arguments(spec, session, rng)
                if args is None:
                    continue
                messages += _asked_and_called(spec, args, session, family, split, rng)
                if hand_off:  # "email the flood map to ..." right after the flood map
                    request, reply = hand_off_decline(spec.name, list(session.results)[-1], rng)
            text = misspell(request, family.typos, rng) if family.typos else request
            messages.append({"role": "user", "content": text})
            messages.append({"role": "assistant", "content": reply, "tool_calls": []})
        elif roll < quiet + config.ellipsis_share:
            spec = rng.choice(scene_tools)
            args = draw_arguments(spec, session, rng)
            varied = vary_one(spec, args, session, rng) if args is not None else None
            if args is None or varied is None:
                continue
            messages += _asked_and_called(spec, args, session, family, split, rng)
            again = word_ellipsis(varied[1], family, split, rng)
            messages.append({"role": "user", "content": again})
            messages += _call_turn(spec, varied[0], session, rng)
            kind = "ellipsis"
        else:
            followup = roll > 1 - config.followup_share and result_tools
            first = rng.choice(mapping_tools if followup else scene_tools)
            args = draw_arguments(first, session, rng)
            if args is None:
                continue
            failed = (
                fake_error(first, args, rng)
                if not followup and split == "train" and rng.random() < config.error_share
                else None
            )
            messages += _asked_and_called(first, args, session, family, split, rng, failed=failed)
            kind = "call" if failed is None else "error"  # "error": the answer relays it
            if followup:
                spec = rng.choice(result_tools)
                args = draw_arguments(spec, session, rng)
                if args is None:
                    continue
                refer = rng.random() < 0.3 and list(session.results)[-1] == args.get("result")
                messages += _asked_and_called(spec, args, session, family, split, rng, refer)
                kind = "followup"
        examples.append(
            Example(
                id=f"{split}-{len(examples):05d}",
                family=family.name,
                style=family.style,
                kind=kind,
                scenes=dict(session.scenes),
                messages=messages,
                results=dict(session.results),
            )
        )
    return examples


def _takes_result(spec: ToolSpec) -> bool:
    props = spec.parameters_schema().get("properties", {})
    return any(
        p.get("description", "").lower().startswith("handle")
        and "result" in p.get("description", "").lower().split(",")[0]
        for p in props.values()
    )


def build_splits(
    tools: Sequence[ToolSpec] | None = None, config: BuildConfig | None = None
) -> dict[str, list[Example]]:
    from tools.registry import get_registry

    config = config or BuildConfig()
    tools = list(tools if tools is not None else get_registry())
    return {
        "train": build_examples(tools, config.n_train, "train", config.seed, config),
        "test": build_examples(tools, config.n_test, "test", config.seed, config),
    }


def write_jsonl(examples: Iterable[Example], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(e.to_json() + "\n" for e in examples), encoding="utf-8")
    tmp.replace(path)
    return path


def read_jsonl(path: Path) -> list[Example]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Example.from_json(line) for line in lines if line.strip()]


# -- to the agent's messages ------------------------------------------------------


def system_text(system_prompt: str, scenes: dict[str, str], results: dict[str, str]) -> str:
    """The system message the agent loop sends: prompt plus `Session.describe()`."""
    suffix = {"scene": ".tif", "vector": ".geojson"}
    lines = [f"{h}: {k} {h}{suffix.get(k, '')}" for h, k in scenes.items()]
    lines += [f"{h}: result of {tool}" for h, tool in results.items()]
    return f"{system_prompt}\n\nIn this session:\n" + "\n".join(lines)


def to_messages(example: Example, system_prompt: str, upto: int | None = None) -> list[BaseMessage]:
    """LangChain messages of the conversation (its first `upto` role dicts), with the
    session as the loop describes it at that point (results made so far)."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    rows = example.messages[:upto]
    made: dict[str, str] = {}
    out: list[BaseMessage] = []
    for i, row in enumerate(rows):
        if row["role"] == "user":
            out.append(HumanMessage(row["content"]))
        elif row["role"] == "assistant":
            calls = [
                {"name": c["name"], "args": c["args"], "id": f"call_{i}_{j}", "type": "tool_call"}
                for j, c in enumerate(row.get("tool_calls", []))
            ]
            out.append(AIMessage(content=row["content"], tool_calls=calls))
        elif row["role"] == "tool":
            failed = row["content"].startswith("Error")  # a relayed failure stores nothing
            out.append(
                ToolMessage(
                    content=row["content"],
                    tool_call_id=f"call_{i - 1}_0",
                    name=row["name"],
                    status="error" if failed else "success",
                )
            )
            handle = None if failed else json.loads(row["content"]).get("handle")
            if handle:
                made[handle] = row["name"]
    return [SystemMessage(system_text(system_prompt, example.scenes, made)), *out]


def final_step(example: Example) -> int:
    """Index of the assistant step answering the last user message."""
    last_user = max(i for i, m in enumerate(example.messages) if m["role"] == "user")
    return last_user + 1


# -- GeoChat / LLaVA instruction data -------------------------------------------------


def convert_llava(
    records: Sequence[dict[str, Any]] | Path, image_root: Path | None = None
) -> list[dict[str, Any]]:
    """GeoChat/LLaVA instruction records ({"id", "image", "conversations": [{"from":
    "human"|"gpt", "value": "<image>\\n..."}]}) as chat examples {"id", "images":
    [path], "messages": [{"role", "content": [{"type": "image"} | {"type": "text",
    "text"}]}]} that a processor's chat template renders."""
    rows: Sequence[dict[str, Any]] = (
        json.loads(records.read_text(encoding="utf-8")) if isinstance(records, Path) else records
    )
    roles = {
        "human": "user",
        "user": "user",
        "gpt": "assistant",
        "assistant": "assistant",
        "system": "system",
    }
    out = []
    for n, record in enumerate(rows):
        images = record.get("image") or []
        images = [images] if isinstance(images, str) else list(images)
        if image_root is not None:
            images = [str(image_root / p) for p in images]
        messages = []
        for turn in record.get("conversations", []):
            role = roles.get(str(turn.get("from", "")).lower())
            if role is None:
                raise ValueError(
                    f"record {record.get('id', n)}: unknown speaker {turn.get('from')!r}"
                    " (expected human or gpt)"
                )
            value = str(turn.get("value", ""))
            content: list[dict[str, Any]] = []
            pieces = value.split("<image>")
            for k, piece in enumerate(pieces):
                if k > 0:
                    content.append({"type": "image"})
                if piece.strip():
                    content.append({"type": "text", "text": piece.strip()})
            messages.append({"role": role, "content": content})
        out.append({"id": str(record.get("id", n)), "images": images, "messages": messages})
    return out
