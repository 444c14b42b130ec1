"""The agent loop: messages -> brain -> tool calls -> validated dispatch -> brain.

One user turn runs until the brain answers without calling a tool, or `max_steps`
brain calls have been made. Every tool call is validated against its pydantic Args;
what can be repaired safely is (tool name case and separators, argument names off by
case or a typo, a handle for a one-item list); everything else goes back to the brain
as a ToolMessage with status="error" that says what went wrong and what to try. No
exception leaves the loop: a brain failure ends the turn with an explanation.

Events (turn start, tokens, tool started/finished, answer) go to a callback, or come
out of `Agent.stream_turn` as a generator, for the CLI and the UI.
"""

from __future__ import annotations

import base64
import contextlib
import difflib
import io
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel, ValidationError

from agent.brains.base import Brain
from agent.brains.parsing import new_call_id
from agent.session import Session
from tools.errors import (
    ArgumentError,
    BandError,
    EmptyResultError,
    EOError,
    GridMismatchError,
    InputFileError,
    NoOverlapError,
    one_line,
)
from tools.registry import Registry, ToolSpec, get_registry

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger(__name__)

MAX_TOOL_CONTENT = 3000  # characters of a result shown to the brain; the rest is the artifact
EventKind = Literal["turn_start", "token", "tool_start", "tool_end", "answer", "error", "done"]

_HINTS: tuple[tuple[type[Exception], str], ...] = (
    (BandError, "Try another tool or scene, or ask the user for a scene with the bands it needs."),
    (GridMismatchError, "Call it again with align=true, or ask the user for co-registered scenes."),
    (InputFileError, "Ask the user to check or replace the file."),
    (
        NoOverlapError,
        "Tell the user the two cover different places, or choose a region over the same area.",
    ),
    (EmptyResultError, "Try another scene, index or method, or tell the user nothing was found."),
    (ArgumentError, "Fix the argument and call again, or ask the user."),
)
_DEFAULT_HINT = "Try another tool or ask the user for different input."


@dataclass
class ToolCallRecord:
    name: str
    args: dict[str, Any]
    ok: bool
    handle: str | None = None
    error: str | None = None
    duration_s: float = 0.0


@dataclass
class ToolOutcome:
    """What one dispatched call produced: the ToolMessage parts and a record."""

    call_id: str
    record: ToolCallRecord
    content: str
    artifact: Any = None
    files: list[str] = field(default_factory=list)

    def message(self) -> ToolMessage:
        return ToolMessage(
            content=self.content,
            tool_call_id=self.call_id,
            name=self.record.name,
            artifact=self.artifact,
            status="success" if self.record.ok else "error",
        )


@dataclass
class TurnResult:
    user: str
    answer: str
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    steps: int = 0
    stopped: Literal["answer", "max_steps", "brain_error"] = "answer"
    error: str | None = None


@dataclass
class AgentEvent:
    kind: EventKind
    text: str = ""
    tool: str | None = None
    args: dict[str, Any] | None = None
    call_id: str | None = None
    ok: bool | None = None
    handle: str | None = None
    duration_s: float | None = None
    turn: TurnResult | None = None


EventCallback = Callable[[AgentEvent], None]


# -- dispatch -------------------------------------------------------------------------


def _normal(name: str) -> str:
    return re.sub(r"[\s\-.]+", "_", name.strip().lower()).strip("_")


def resolve_tool_name(name: str, registry: Registry) -> tuple[str | None, list[str]]:
    """The registered name a call means (forgiving case, separators and a 'functions.'
    prefix), or None with the nearest names."""
    if name in registry:
        return name, []
    text = _normal(name)
    for prefix in ("functions_", "tools_", "tool_"):
        if text.startswith(prefix) and text[len(prefix) :] in registry:
            return text[len(prefix) :], []
    if text in registry:
        return text, []
    return None, difflib.get_close_matches(text, registry.names, n=3, cutoff=0.5)


def _repair_keys(args: dict[str, Any], spec: ToolSpec) -> dict[str, Any]:
    fields = list(spec.args_model.model_fields)
    by_normal = {re.sub(r"[^a-z0-9]", "", f): f for f in fields}
    repaired: dict[str, Any] = {}
    for key, value in args.items():
        target = key
        if key not in fields:
            target = by_normal.get(re.sub(r"[^a-z0-9]", "", str(key).lower()), key)
            if target not in fields:
                close = difflib.get_close_matches(str(key).lower(), fields, n=1, cutoff=0.8)
                target = close[0] if close else key
            if target in args or target in repaired:
                target = key  # never overwrite an argument the brain did give
        repaired[target] = value
    return repaired


def _args_text(args: Any) -> str:
    try:
        text = json.dumps(args, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(args)
    return text if len(text) <= 400 else text[:400] + "...}"


def _validation_text(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:6]:
        loc = ".".join(str(x) for x in err["loc"]) or "arguments"
        parts.append(f"'{loc}': {err['msg']}")
    return "; ".join(parts)


def _error(
    call_id: str, name: str, args: dict[str, Any], message: str, duration: float = 0.0
) -> ToolOutcome:
    record = ToolCallRecord(name=name, args=args, ok=False, error=message, duration_s=duration)
    return ToolOutcome(call_id=call_id, record=record, content=message, artifact={"error": message})


def failure_text(name: str, given: dict[str, Any], exc: Exception) -> str:
    """How a tool's exception reads to the brain: the call, the error, what to do next."""
    hint = next((h for t, h in _HINTS if isinstance(exc, t)), _DEFAULT_HINT)
    return (
        f"Error executing tool '{name}' with arguments {_args_text(given)}: "
        f"{type(exc).__name__}: {one_line(str(exc))} {hint}"
    )


def dispatch(
    session: Session, call: Mapping[str, Any], registry: Registry | None = None
) -> ToolOutcome:
    """Validate and run one tool call against the session. Never raises."""
    registry = registry or get_registry()
    call_id = str(call.get("id") or new_call_id())
    raw_name = str(call.get("name") or "")
    raw_args: Any = call.get("args")
    if raw_args is None:
        raw_args = {}
    if isinstance(raw_args, str):
        with contextlib.suppress(ValueError):  # left as text: reported as not an object
            raw_args = json.loads(raw_args) if raw_args.strip() else {}
    args_dict = raw_args if isinstance(raw_args, dict) else {"_raw": raw_args}
    name, close = resolve_tool_name(raw_name, registry)
    if name is None:
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        return _error(
            call_id,
            raw_name,
            args_dict,
            f"Error: there is no tool named '{raw_name}'.{hint} Available tools: "
            f"{', '.join(registry.names)}. Call one of them by its exact name.",
        )
    spec = registry[name]
    if not isinstance(raw_args, dict):
        return _error(
            call_id,
            name,
            args_dict,
            f"Error: the arguments of '{name}' must be a JSON object, got {_args_text(raw_args)}. "
            f"Expected: {_signature(spec)}.",
        )
    repaired = _repair_keys(raw_args, spec)
    try:
        args = spec.args_model.model_validate(repaired)
    except ValidationError as exc:
        return _error(
            call_id,
            name,
            raw_args,
            f"Error: invalid arguments for tool '{name}' {_args_text(raw_args)}: "
            f"{_validation_text(exc)}. Expected: {_signature(spec)}. Fix the arguments "
            "and call again.",
        )
    given = args.model_dump(mode="json", exclude_unset=True)
    started = time.perf_counter()
    try:
        handle = session.begin_call(spec.prefix_for(args))
        result = spec.function(session, args)
        if not isinstance(result, BaseModel):
            raise TypeError(f"tool returned {type(result).__name__}, not a pydantic model")
        stored = session.store_result(name, given, result)
    except Exception as exc:
        session.abort_call()
        if not isinstance(exc, EOError):
            log.warning("tool %s failed unexpectedly", name, exc_info=True)
        message = failure_text(name, given, exc)
        return _error(call_id, name, given, message, time.perf_counter() - started)
    duration = time.perf_counter() - started
    files = list(stored.files)
    path = stored.data.get("path")
    if name == "export" and isinstance(path, str):
        files.append(path)
    record = ToolCallRecord(name=name, args=given, ok=True, handle=handle, duration_s=duration)
    return ToolOutcome(
        call_id=call_id,
        record=record,
        content=_content(handle, stored.data),
        artifact={"handle": handle, "tool": name, "result": stored.data},
        files=files,
    )


def _signature(spec: ToolSpec) -> str:
    from tools.adapters import tool_signature

    return tool_signature(spec)


def _content(handle: str, data: dict[str, Any]) -> str:
    """The result as the brain reads it: JSON under its handle, shortened if long."""
    body = {"handle": handle, **data}
    text = json.dumps(body, ensure_ascii=False, default=str)
    if len(text) <= MAX_TOOL_CONTENT:
        return text
    text = json.dumps(_shorten(body), ensure_ascii=False, default=str)
    return text if len(text) <= MAX_TOOL_CONTENT else text[:MAX_TOOL_CONTENT] + " ...(truncated)"


def _shorten(value: Any, depth: int = 0) -> Any:
    if isinstance(value, dict):
        return {k: _shorten(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        items = [_shorten(v, depth + 1) for v in value[:5]]
        return items + ([f"... {len(value) - 5} more"] if len(value) > 5 else [])
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "..."
    return value


# -- the agent ------------------------------------------------------------------------


_OWNED = re.compile(r"fail|error|could ?n[o']t|can ?n[o']t|did ?n[o']t run|unable|needs", re.I)


def _owning_failure(answer: str, calls: list[ToolCallRecord]) -> str:
    """The answer, or the error of the turn's last call when that call failed and the
    answer does not say so: a small model otherwise reports fields of a result that was
    never made. With nothing computed this turn the error replaces the answer; otherwise
    it follows it."""
    if not calls or calls[-1].ok or _OWNED.search(answer):
        return answer
    failure = f"{calls[-1].name} failed: {calls[-1].error}"
    return f"{answer}\n\n{failure}" if any(c.ok for c in calls) and answer else failure


def default_system_prompt() -> str:
    path = Path(__file__).resolve().parents[1] / "prompts" / "system_v1.txt"
    return path.read_text(encoding="utf-8").strip() if path.exists() else ""


class Agent:
    """A brain, a session and the tools, driven turn by turn."""

    def __init__(
        self,
        brain: Brain,
        session: Session,
        *,
        registry: Registry | None = None,
        max_steps: int = 8,
        system_prompt: str | None = None,
        on_event: EventCallback | None = None,
    ) -> None:
        self.brain = brain
        self.session = session
        self.registry = registry or get_registry()
        self.max_steps = max(1, max_steps)
        self.system_prompt = default_system_prompt() if system_prompt is None else system_prompt
        self.on_event = on_event
        self._image_urls: dict[str, str] = {}

    def run_turn(
        self, user_text: str, *, images: Sequence[str] = (), on_event: EventCallback | None = None
    ) -> TurnResult:
        """Run one user turn to its answer (or the step limit). Never raises."""
        emit = self._emitter(on_event or self.on_event)
        turn = TurnResult(user=user_text, answer="")
        extra = {"images": list(images)} if images else {}
        self.session.messages.append(HumanMessage(content=user_text, additional_kwargs=extra))
        emit(AgentEvent("turn_start", text=user_text))
        try:
            self._steps(turn, emit)
        except Exception as exc:  # a bug in the loop itself: still end the turn cleanly
            log.warning("agent loop failed", exc_info=True)
            turn.error = f"{type(exc).__name__}: {one_line(str(exc))}"
            turn.stopped = "brain_error"
            turn.answer = f"Something went wrong inside the agent ({turn.error})."
            self.session.messages.append(AIMessage(content=turn.answer))
        finally:
            try:
                self.session.save()
            except OSError as exc:
                turn.error = turn.error or f"could not save the session: {exc}"
        emit(AgentEvent("answer", text=turn.answer, turn=turn))
        emit(AgentEvent("done", turn=turn))
        return turn

    def stream_turn(self, user_text: str, *, images: Sequence[str] = ()) -> Iterator[AgentEvent]:
        """The same turn as a generator of events; the last one has kind 'done'."""
        events: queue.Queue[AgentEvent | None] = queue.Queue()

        def work() -> None:
            try:
                self.run_turn(user_text, images=images, on_event=events.put)
            finally:
                events.put(None)

        worker = threading.Thread(
            target=work,
            daemon=True,
        )
        worker.start()
        while (event := events.get()) is not None:
            yield event
        worker.join()

    def _steps(self, turn: TurnResult, emit: EventCallback) -> None:
        for step in range(1, self.max_steps + 1):
            turn.steps = step
            try:
                message = self.brain.respond(
                    self._brain_messages(),
                    list(self.registry),
                    on_token=lambda token: emit(AgentEvent("token", text=token)),
                )
                if not isinstance(message, AIMessage):
                    raise TypeError(
                        f"the brain returned {type(message).__name__}, not an AIMessage"
                    )
            except Exception as exc:
                turn.error = f"{type(exc).__name__}: {one_line(str(exc))}"
                turn.stopped = "brain_error"
                turn.answer = f"The model backend failed ({turn.error}); no answer this turn."
                self.session.messages.append(AIMessage(content=turn.answer))
                emit(AgentEvent("error", text=turn.error))
                return
            message = _with_call_ids(message)
            self.session.messages.append(message)
            if not message.tool_calls and not message.invalid_tool_calls:
                turn.answer = _owning_failure(message.text.strip(), turn.tool_calls)
                if turn.answer != message.text.strip():
                    self.session.messages[-1] = AIMessage(content=turn.answer)
                return
            for bad in message.invalid_tool_calls:
                outcome = _error(
                    str(bad.get("id") or new_call_id()),
                    str(bad.get("name") or "?"),
                    {"_raw": bad.get("args")},
                    f"Error: could not read the tool call {bad.get('args')!r}: "
                    f"{bad.get('error') or 'malformed'}. Write it as one JSON object "
                    '{"name": ..., "arguments": {...}}.',
                )
                self._record(turn, outcome, emit)
            for call in message.tool_calls:
                emit(
                    AgentEvent(
                        "tool_start", tool=call["name"], args=dict(call["args"]), call_id=call["id"]
                    )
                )
                outcome = dispatch(self.session, call, self.registry)
                self._record(turn, outcome, emit)
        turn.stopped = "max_steps"
        done = [f"{r.handle} ({r.name})" for r in turn.tool_calls if r.ok and r.handle]
        turn.answer = (
            f"I stopped after {self.max_steps} steps without a final answer. "
            + (f"Results so far: {', '.join(done)}. " if done else "")
            + "Ask me to continue, or narrow the question."
        )
        self.session.messages.append(AIMessage(content=turn.answer))

    def _record(self, turn: TurnResult, outcome: ToolOutcome, emit: EventCallback) -> None:
        self.session.messages.append(outcome.message())
        turn.tool_calls.append(outcome.record)
        turn.artifacts.extend(f for f in outcome.files if f not in turn.artifacts)
        emit(
            AgentEvent(
                "tool_end",
                tool=outcome.record.name,
                args=outcome.record.args,
                call_id=outcome.call_id,
                ok=outcome.record.ok,
                handle=outcome.record.handle,
                duration_s=outcome.record.duration_s,
                text=outcome.record.error or outcome.content[:200],
            )
        )

    def _brain_messages(self) -> list[BaseMessage]:
        system = self.system_prompt
        holdings = self.session.describe()
        system = f"{system}\n\nIn this session:\n{holdings}".strip()
        messages: list[BaseMessage] = [SystemMessage(content=system)]
        for message in self.session.messages:
            images = (
                message.additional_kwargs.get("images")
                if isinstance(message, HumanMessage)
                else None
            )
            if images and getattr(self.brain, "accepts_images", False):
                parts: list[str | dict[str, Any]] = [{"type": "text", "text": message.text}]
                parts += [
                    {"type": "image_url", "image_url": {"url": self._image_url(h)}} for h in images
                ]
                message = HumanMessage(content=parts)
            messages.append(message)
        return messages

    def _image_url(self, handle: str) -> str:
        if handle not in self._image_urls:
            from PIL import Image

            from tools.export import preview_grid, scene_rgb

            scene = self.session.scene(handle)
            rgb = scene_rgb(scene, preview_grid(scene.grid, 512))
            buffer = io.BytesIO()
            Image.fromarray((rgb * 255).astype("uint8")).save(buffer, format="PNG")
            self._image_urls[handle] = (
                "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
            )
        return self._image_urls[handle]

    @staticmethod
    def _emitter(callback: EventCallback | None) -> EventCallback:
        def emit(event: AgentEvent) -> None:
            if callback is None:
                return
            try:
                callback(event)
            except Exception:  # a broken display must not break the conversation
                log.warning("event callback failed", exc_info=True)

        return emit


def _with_call_ids(message: AIMessage) -> AIMessage:
    """Give every call an id (some servers and brains omit them) so replies pair up."""
    if all(c.get("id") for c in message.tool_calls) and all(
        c.get("id") for c in message.invalid_tool_calls
    ):
        return message
    calls = [{**c, "id": c.get("id") or new_call_id()} for c in message.tool_calls]
    invalid = [{**c, "id": c.get("id") or new_call_id()} for c in message.invalid_tool_calls]
    return message.model_copy(update={"tool_calls": calls, "invalid_tool_calls": invalid})
