"""A brain that replays a plan: deterministic conversations for tests, demos and task runs.

A plan is a list of turns. Each turn has `steps` (a list of steps, each a list of calls
the brain makes at once) or `calls` (shorthand: one call per step, in order), and an
`answer` template. A call is {"name": ..., "args": {...}} or {"raw": "<text>"}: text
parsed as a text brain's completion, to exercise malformed calls.

The answer is a `str.format` template over the results of the conversation so far:
`{flood_1.flooded_area_ha:.1f}` (by handle), `{flood_map.flooded_area_ha:.0f}` (the
latest result of a tool), `{last.output}` (the latest result of this turn), `{errors}`
(how many calls failed this turn). A field that does not exist renders as `<n/a: ...>`
instead of raising.

    [{"calls": [{"name": "flood_map", "args": {"post": ["post"]}}],
      "answer": "About {flood_1.flooded_area_ha:.1f} ha are flooded."}]
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from pydantic import BaseModel, Field, model_validator

from agent.brains.base import BrainError, TokenCallback
from agent.brains.parsing import new_call_id, to_ai_message

if TYPE_CHECKING:
    from tools.registry import ToolSpec


class ScriptedCall(BaseModel):
    name: str | None = None
    args: dict[str, Any] | str = Field(default_factory=dict)
    raw: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> ScriptedCall:
        if (self.name is None) == (self.raw is None):
            raise ValueError("a scripted call has either a 'name' (with 'args') or 'raw' text")
        return self


class ScriptedTurn(BaseModel):
    steps: list[list[ScriptedCall]] = Field(default_factory=list)
    calls: list[ScriptedCall] = Field(default_factory=list)
    answer: str = ""

    def all_steps(self) -> list[list[ScriptedCall]]:
        return self.steps + [[call] for call in self.calls]


class _Missing:
    def __init__(self, field: str) -> None:
        self.field = field

    def __str__(self) -> str:
        return f"<n/a: {self.field}>"


class _Value(dict[str, Any]):
    """A result dict whose keys also read as attributes in templates."""

    def __getattr__(self, key: str) -> Any:
        try:
            return _wrap(self[key])
        except KeyError as exc:
            raise AttributeError(key) from exc


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return _Value(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class _Template(string.Formatter):
    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Any) -> Any:
        try:
            return super().get_field(field_name, args, kwargs)
        except (KeyError, AttributeError, IndexError, TypeError, ValueError):
            return _Missing(field_name), field_name

    def format_field(self, value: Any, format_spec: str) -> Any:
        if isinstance(value, _Missing) or value is None:
            return str(value) if isinstance(value, _Missing) else "n/a"
        try:
            return super().format_field(value, format_spec)
        except (ValueError, TypeError):
            return str(value)


def render_answer(template: str, messages: Sequence[BaseMessage]) -> str:
    """Fill an answer template from the tool results in `messages`."""
    context: dict[str, Any] = {}
    turn_start = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1)
    errors = 0
    for i, message in enumerate(messages):
        if not isinstance(message, ToolMessage):
            continue
        artifact = message.artifact if isinstance(message.artifact, dict) else {}
        if message.status == "error":
            errors += i > turn_start
            continue
        handle, result = artifact.get("handle"), artifact.get("result")
        if isinstance(handle, str) and isinstance(result, dict):
            value = _Value({"handle": handle, **result})
            context[handle] = value
            context[str(artifact.get("tool"))] = value
            if i > turn_start:
                context["last"] = value
    context["errors"] = errors
    try:
        return _Template().vformat(template, (), context)
    except (ValueError, IndexError) as exc:  # an unbalanced brace in the template itself
        return f"{template} (template error: {exc})"


class ScriptedBrain:
    """Replays `turns`; the position comes from the messages, so it survives resumes."""

    name = "scripted"
    accepts_images = False

    def __init__(self, turns: Sequence[ScriptedTurn | dict[str, Any]]) -> None:
        self.turns = [
            t if isinstance(t, ScriptedTurn) else ScriptedTurn.model_validate(t) for t in turns
        ]

    @classmethod
    def from_file(cls, path: str | Path, task_id: str | None = None) -> ScriptedBrain:
        """A plan file: a list of turns, {"turns": [...]}, or {"tasks": {id: [...], "*": [...]}}."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BrainError(
                f"Cannot read the plan file {path}: {exc}; check EOAGENT_SCRIPT_PATH."
            ) from exc
        if isinstance(data, dict) and "tasks" in data:
            tasks = data["tasks"]
            data = tasks.get(task_id) if task_id in tasks else tasks.get("*", [])
        elif isinstance(data, dict):
            data = data.get("turns", [])
        return cls(data)

    def respond(
        self,
        messages: Sequence[BaseMessage],
        tools: Sequence[ToolSpec],
        *,
        on_token: TokenCallback | None = None,
    ) -> AIMessage:
        humans = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage)]
        turn_index = len(humans) - 1
        if turn_index < 0 or turn_index >= len(self.turns):
            text = "I have no scripted answer for this turn."
            if on_token:
                on_token(text)
            return AIMessage(content=text)
        turn = self.turns[turn_index]
        step = sum(isinstance(m, AIMessage) for m in messages[humans[-1] :])
        steps = turn.all_steps()
        if step < len(steps):
            return _message_for(steps[step])
        text = render_answer(turn.answer, messages)
        if on_token:
            on_token(text)
        return AIMessage(content=text)


def _message_for(calls: list[ScriptedCall]) -> AIMessage:
    tool_calls: list[Any] = []
    invalid: list[Any] = []
    text_parts: list[str] = []
    for call in calls:
        if call.raw is not None:
            parsed = to_ai_message(call.raw)
            tool_calls += parsed.tool_calls
            invalid += parsed.invalid_tool_calls
            text_parts.append(parsed.text)
        elif isinstance(call.args, str):
            invalid.append(
                {
                    "name": call.name,
                    "args": call.args,
                    "id": new_call_id(),
                    "error": "arguments are not a JSON object",
                    "type": "invalid_tool_call",
                }
            )
        else:
            tool_calls.append(
                {"name": call.name, "args": call.args, "id": new_call_id(), "type": "tool_call"}
            )
    return AIMessage(
        content=" ".join(t for t in text_parts if t),
        tool_calls=tool_calls,
        invalid_tool_calls=invalid,
    )
