"""Tool calls in generated text: the format text brains are taught, and its parser.

A call is one JSON object between explicit tags, anywhere in the completion:

    <tool_call>{"name": "flood_map", "arguments": {"post": ["post"], "pre": ["pre"]}}</tool_call>

The parser never raises, whatever the text: a block it cannot read becomes an invalid
call (with the reason) that the loop hands back to the model, and the text outside
the blocks is the answer. It forgives what small models commonly get wrong: a missing
closing tag at the end of a completion, code fences, "args"/"parameters" instead of
"arguments", arguments given as a JSON string, and trailing junk after the object.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_core.messages import AIMessage

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"
_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_NAME_FIELD = re.compile(r'"name"\s*:\s*"([A-Za-z0-9_.\-]{1,64})"')
_ARG_KEYS = ("arguments", "args", "parameters", "input")
_MAX_ECHO = 300


@dataclass
class ParsedCompletion:
    """The answer text and the calls found in one completion."""

    text: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    invalid_tool_calls: list[dict[str, Any]] = field(default_factory=list)


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:12]}"


def format_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """The canonical text of one call (what fine-tuning data and few-shot prompts use).
    '<' is escaped inside the JSON so that argument text can never close the tag."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return OPEN_TAG + body.replace("<", "\\u003c") + CLOSE_TAG


def parse_completion(text: str) -> ParsedCompletion:
    """Split a completion into answer text and tool calls. Never raises."""
    try:
        return _parse(text if isinstance(text, str) else str(text))
    except Exception as exc:  # last resort: the loop must get an answer, never a traceback
        return ParsedCompletion(
            text="",
            invalid_tool_calls=[
                _invalid(
                    None, str(text)[:_MAX_ECHO], f"unreadable completion ({type(exc).__name__})"
                )
            ],
        )


def _parse(text: str) -> ParsedCompletion:
    result = ParsedCompletion(text="")
    blocks = list(_BLOCK.finditer(text))
    if not blocks:
        stripped = text.strip()
        # A bare JSON object that names a tool is a call without its tags.
        if stripped.startswith("{") and stripped.endswith("}"):
            call = _read_call(stripped, strict_shape=True)
            if call is not None and "error" not in call:
                result.tool_calls.append(call)
                return result
        result.text = stripped
        return result
    kept: list[str] = []
    last = 0
    for match in blocks:
        kept.append(text[last : match.start()])
        last = match.end()
        call = _read_call(match.group(1), strict_shape=False)
        if call is None:
            continue
        if "error" in call:
            result.invalid_tool_calls.append(call)
        else:
            result.tool_calls.append(call)
    kept.append(text[last:])
    result.text = re.sub(r"\n{3,}", "\n\n", "".join(kept)).strip()
    return result


def _read_call(body: str, *, strict_shape: bool) -> dict[str, Any] | None:
    body = _FENCE.sub("", body.strip())
    starts = [i for i in (body.find("{"), body.find("[")) if i >= 0]
    start = min(starts, default=-1)
    if start < 0:
        return None if strict_shape else _invalid(None, body, "no JSON object inside <tool_call>")
    try:
        obj, _ = json.JSONDecoder().raw_decode(body, start)
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nesting too deep"
        named = _NAME_FIELD.search(body)
        return (
            None
            if strict_shape
            else _invalid(named.group(1) if named else None, body, f"invalid JSON ({reason})")
        )
    if not isinstance(obj, dict):
        return None if strict_shape else _invalid(None, body, "the call must be a JSON object")
    name: Any = obj.get("name", obj.get("tool"))
    raw_args: Any = next((obj[k] for k in _ARG_KEYS if k in obj), None)
    function = obj.get("function")
    if name is None and isinstance(function, dict):  # OpenAI's own shape
        name, raw_args = function.get("name"), function.get("arguments", raw_args)
    if strict_shape and (name is None or raw_args is None):
        return None
    if not isinstance(name, str) or not name.strip():
        return _invalid(None, body, 'the call has no "name" string')
    if raw_args is None:
        raw_args = {}
    if isinstance(raw_args, str):
        try:
            raw_args = json.loads(raw_args) if raw_args.strip() else {}
        except (ValueError, RecursionError):
            return _invalid(name, raw_args, '"arguments" is a string that is not valid JSON')
    if not isinstance(raw_args, dict):
        return _invalid(name, body, '"arguments" must be a JSON object of argument names to values')
    return {"name": name.strip(), "args": raw_args, "id": new_call_id(), "type": "tool_call"}


def _invalid(name: str | None, args: str, error: str) -> dict[str, Any]:
    return {
        "name": name,
        "args": args[:_MAX_ECHO],
        "id": new_call_id(),
        "error": error,
        "type": "invalid_tool_call",
    }


def to_ai_message(text: str) -> AIMessage:
    """An AIMessage from a completion: answer text, tool calls, invalid calls."""
    from langchain_core.messages import AIMessage

    parsed = parse_completion(text)
    return AIMessage(
        content=parsed.text,
        tool_calls=parsed.tool_calls,
        invalid_tool_calls=parsed.invalid_tool_calls,
    )
