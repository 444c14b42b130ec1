"""What the chat shows: agent events and saved sessions as Gradio chat messages, and a
session's results as a table of areas and counts, overlay images and downloads.

Plain functions on dicts (Gradio's "messages" format: role, content, metadata), so they
are tested without a browser and the UI module only wires them to components.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.errors import one_line

if TYPE_CHECKING:
    from agent.loop import AgentEvent
    from agent.session import Session

Message = dict[str, Any]
TABLE_HEADERS = ["result", "tool", "quantity", "value", "unit"]
DOWNLOAD_SUFFIXES = (".tif", ".tiff", ".geojson")
_TOOL_CALL_TAG = "<tool_call>"


def _args_block(args: dict[str, Any] | None) -> str:
    text = json.dumps(args or {}, ensure_ascii=False, indent=1, default=str)
    return f"```json\n{text[:1500]}\n```"


def _result_brief(content: str) -> str:
    """A tool's JSON result as a few readable lines (paths and long lists left out)."""
    try:
        data = json.loads(content)
    except ValueError:
        return one_line(content)[:400]
    if not isinstance(data, dict):
        return one_line(content)[:400]
    lines = []
    for key, value in data.items():
        if key in ("handle", "source", "bands", "band_units", "notes", "output", "geojson"):
            continue
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, dict | list):
            value = one_line(json.dumps(value, default=str))[:120]
        lines.append(f"- **{key}**: {value}")
    return "\n".join(lines[:14])


def tool_message(
    call_id: str,
    tool: str,
    args: dict[str, Any] | None,
    *,
    status: str,
    handle: str | None = None,
    duration_s: float | None = None,
    detail: str = "",
    elapsed_s: float | None = None,
) -> Message:
    """A collapsible message for one tool call: pending (spinner), done, or failed."""
    if status == "pending":
        title = f"🛠️ Running {tool}"
        log = f"{elapsed_s:.0f} s" if elapsed_s and elapsed_s >= 1 else "started"
    elif status == "ok":
        title, log = f"✅ {tool} → {handle}", "ok"
    else:
        title, log = f"⚠️ {tool} failed", "error"
    metadata: dict[str, Any] = {
        "title": title,
        "id": call_id,
        "status": "pending" if status == "pending" else "done",
        "log": log,
    }
    if duration_s is not None:
        metadata["duration"] = round(duration_s, 2)
    content = f"**arguments**\n{_args_block(args)}"
    if detail:
        content += f"\n\n**{'result' if status == 'ok' else 'error'}**\n{detail}"
    return {"role": "assistant", "content": content, "metadata": metadata}


def note(text: str, title: str | None = None) -> Message:
    """An assistant message, collapsible under `title` when one is given."""
    message: Message = {"role": "assistant", "content": text}
    if title:
        message["metadata"] = {"title": title, "status": "done"}
    return message


def file_message(path: str | Path, alt: str) -> Message:
    return {"role": "assistant", "content": {"path": str(path), "alt_text": alt}}


@dataclass
class TurnView:
    """The chat messages of one turn, rebuilt as agent events arrive."""

    messages: list[Message] = field(default_factory=list)
    _tools: dict[str, int] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)
    _draft: int | None = None
    _draft_text: str = ""

    def pending(self) -> list[str]:
        return [
            c for c, i in self._tools.items() if self.messages[i]["metadata"]["status"] == "pending"
        ]

    def tick(self) -> bool:
        """Refresh the elapsed time of running tools; True when something changed."""
        changed = False
        for call_id in self.pending():
            index = self._tools[call_id]
            old = self.messages[index]
            elapsed = time.perf_counter() - self._started[call_id]
            new_log = f"{elapsed:.0f} s" if elapsed >= 1 else "started"
            if old["metadata"].get("log") != new_log:
                self.messages[index] = {**old, "metadata": {**old["metadata"], "log": new_log}}
                changed = True
        return changed

    def _close_draft(self) -> None:
        if self._draft is None:
            return
        visible = self._draft_text.split(_TOOL_CALL_TAG, 1)[0].strip()
        if visible:
            self.messages[self._draft]["content"] = visible
        else:
            self.messages.pop(self._draft)
            self._tools = {c: i - (i > self._draft) for c, i in self._tools.items()}
        self._draft, self._draft_text = None, ""

    def apply(self, event: AgentEvent) -> None:
        if event.kind == "token":
            self._draft_text += event.text
            visible = self._draft_text.split(_TOOL_CALL_TAG, 1)[0]
            if self._draft is None:
                self.messages.append({"role": "assistant", "content": visible})
                self._draft = len(self.messages) - 1
            else:
                self.messages[self._draft]["content"] = visible
        elif event.kind == "tool_start":
            self._close_draft()
            call_id = event.call_id or f"call_{len(self.messages)}"
            self._started[call_id] = time.perf_counter()
            self.messages.append(
                tool_message(call_id, event.tool or "?", event.args, status="pending")
            )
            self._tools[call_id] = len(self.messages) - 1
        elif event.kind == "tool_end":
            self._close_draft()
            call_id = event.call_id or ""
            detail = _result_brief(event.text) if event.ok else one_line(event.text)[:600]
            message = tool_message(
                call_id,
                event.tool or "?",
                event.args,
                status="ok" if event.ok else "error",
                handle=event.handle,
                duration_s=event.duration_s,
                detail=detail,
            )
            if call_id in self._tools:
                self.messages[self._tools[call_id]] = message
            else:  # a call rejected before it ran (invalid JSON): no start event
                self.messages.append(message)
        elif event.kind == "error":
            self._close_draft()
            self.messages.append(note(f"⚠️ {event.text}"))
        elif event.kind == "answer":
            text = event.text or "(no answer)"
            if self._draft is not None:
                self.messages[self._draft]["content"] = text
                self._draft, self._draft_text = None, ""
            else:
                self.messages.append({"role": "assistant", "content": text})


# -- a saved session as chat messages --------------------------------------------------


def history_from_session(session: Session) -> list[Message]:
    """The conversation stored in the session, as the chat shows it after a reload."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    messages: list[Message] = []
    calls: dict[str, dict[str, Any]] = {}
    for message in session.messages:
        if isinstance(message, HumanMessage):
            images = message.additional_kwargs.get("images") or []
            text = str(message.text)
            if images:
                text += f"\n\n📎 attached: {', '.join(f'`{h}`' for h in images)}"
            messages.append({"role": "user", "content": text})
        elif isinstance(message, AIMessage):
            for made in message.tool_calls:
                calls[str(made.get("id"))] = {"name": made["name"], "args": made["args"]}
            if message.text.strip() and not message.tool_calls:
                messages.append({"role": "assistant", "content": message.text.strip()})
        elif isinstance(message, ToolMessage):
            call = calls.get(message.tool_call_id, {"name": message.name or "?", "args": {}})
            artifact = message.artifact if isinstance(message.artifact, dict) else {}
            ok = message.status != "error"
            messages.append(
                tool_message(
                    message.tool_call_id,
                    call["name"],
                    call["args"],
                    status="ok" if ok else "error",
                    handle=artifact.get("handle"),
                    detail=_result_brief(str(message.content))
                    if ok
                    else one_line(str(message.content))[:600],
                )
            )
    return messages


# -- results panel ---------------------------------------------------------------------


def _unit(key: str) -> str:
    if key.endswith("_ha") or key == "area_ha":
        return "ha"
    if key.endswith("_km2"):
        return "km²"
    if key.endswith("_m2"):
        return "m²"
    if key.endswith("fraction"):
        return "%"
    return "count"


def _is_quantity(key: str, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return (
        key.endswith(("_ha", "_km2", "_m2", "fraction", "_pixels", "_count", "count"))
        or key.startswith("n_")
        or key in ("features", "buildings")
    )


def _display(key: str, value: float) -> float:
    return round(value * 100, 2) if key.endswith("fraction") else round(float(value), 3)


def result_rows(session: Session) -> list[list[Any]]:
    """Areas and counts of every result: one row per quantity, class areas included."""
    rows: list[list[Any]] = []
    for handle, stored in session.state.results.items():
        data = stored.data
        for key, value in data.items():
            if _is_quantity(key, value):
                rows.append([handle, stored.tool, key, _display(key, value), _unit(key)])
            elif isinstance(value, dict) and key in ("counts", "area_ha", "class_area_ha"):
                unit = "count" if key == "counts" else "ha"
                for name, amount in value.items():
                    if isinstance(amount, int | float) and not isinstance(amount, bool):
                        rows.append(
                            [handle, stored.tool, f"{name} ({key})", round(amount, 3), unit]
                        )
            elif key == "classes" and isinstance(value, list):
                for item in value:
                    if isinstance(item, dict) and item.get("area_ha") is not None:
                        rows.append(
                            [
                                handle,
                                stored.tool,
                                f"{item.get('name')} area",
                                round(item["area_ha"], 3),
                                "ha",
                            ]
                        )
    return rows


def overlay_images(session: Session) -> list[tuple[str, str]]:
    """(quicklook PNG, caption) of every result that has one, oldest first."""
    images = []
    for handle, stored in session.state.results.items():
        for path in stored.files:
            if path.endswith(".png") and Path(path).exists():
                images.append((path, f"{handle} ({stored.tool})"))
        exported = stored.data.get("path")
        if (
            stored.tool == "export"
            and str(exported).endswith(".png")
            and Path(str(exported)).exists()
        ):
            images.append((str(exported), f"{handle} (export)"))
    return images


def download_files(session: Session) -> list[str]:
    """GeoTIFF and GeoJSON files of the results and exports, for download."""
    files: list[str] = []
    for stored in session.state.results.values():
        candidates = list(stored.files)
        if stored.tool == "export" and isinstance(stored.data.get("path"), str):
            candidates.append(stored.data["path"])
        for path in candidates:
            if path.endswith(DOWNLOAD_SUFFIXES) and Path(path).exists() and path not in files:
                files.append(path)
    return files
