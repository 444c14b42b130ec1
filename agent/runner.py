"""`eoagent run TASKS.jsonl --out RESULTS.jsonl`: scripted agent tasks, one per line.

Input line:  {"id": str, "images": {handle: path}, "turns": [{"user": str}, ...]}
Output line: {"id": str, "turns": [{"user", "tool_calls": [{"name", "args", "ok"}],
              "answer", "artifacts": [path, ...]}], "error": str | null}

Each task gets its own session (a workspace under the settings' workspace_dir). A task
that fails (an unreadable line, an image that does not open, a brain that does not
answer) gets its error written and the run goes on. Lines are written to
`RESULTS.jsonl.part` as tasks finish and the file is renamed into place at the end, so
a killed run never leaves a truncated RESULTS file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.brains.base import Brain
from agent.loop import Agent, TurnResult
from agent.session import Session
from agent.settings import Backend, Settings
from tools.errors import InputFileError, one_line

BrainFactory = Callable[[str], Brain]


class TaskTurn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    user: str = Field(description="what the user says in this turn")


class Task(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, description="task id, copied to the output line")
    images: dict[str, str] = Field(default_factory=dict, description="handle -> image path")
    turns: list[TaskTurn] = Field(min_length=1, description="the user's turns, in order")


@dataclass
class RunSummary:
    tasks: int
    failed: int
    out_path: Path


def run_tasks(
    tasks_path: str | Path,
    out_path: str | Path,
    backend: Backend | None = None,
    *,
    settings: Settings | None = None,
    brain_factory: BrainFactory | None = None,
    progress: bool = True,
) -> RunSummary:
    """Run every task of `tasks_path` and write one result line per task to `out_path`."""
    from tqdm import tqdm

    settings = settings or Settings()
    if backend is not None:
        settings = settings.model_copy(update={"backend": backend})
    tasks_path, out_path = Path(tasks_path), Path(out_path)
    try:
        lines = tasks_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(
            f"Cannot read the task file {tasks_path}: {exc}; check the path."
        ) from exc
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    root = settings.workspace_root() / f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}-{os.getpid()}"
    factory = brain_factory or _settings_factory(settings)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".part")
    failed = 0
    try:
        with partial.open("w", encoding="utf-8") as out:
            for n, line in tqdm(numbered, desc="tasks", unit="task", disable=not progress):
                record = _run_line(n, line, root, settings, factory, tasks_path.parent)
                failed += record["error"] is not None
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.flush()
        os.replace(partial, out_path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return RunSummary(tasks=len(numbered), failed=failed, out_path=out_path)


def _settings_factory(settings: Settings) -> BrainFactory:
    """A scripted brain per task (its plan is chosen by task id); any other brain is
    built once and shared, so a model is loaded (and its prompt prefix prefilled) once
    per run, not once per task."""
    from agent.brains import make_brain

    if settings.backend == "scripted":
        return lambda task_id: make_brain(settings, task_id=task_id)
    shared: dict[str, Brain] = {}

    def factory(task_id: str) -> Brain:
        if "brain" not in shared:
            shared["brain"] = make_brain(settings)
        return shared["brain"]

    return factory


def _run_line(
    n: int, line: str, root: Path, settings: Settings, factory: BrainFactory, base_dir: Path
) -> dict[str, Any]:
    raw_id = f"line-{n}"
    try:
        data = json.loads(line)
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            raw_id = data["id"]
        task = Task.model_validate(data)
    except (ValueError, ValidationError) as exc:
        detail = exc.errors()[0] if isinstance(exc, ValidationError) else None
        reason = (
            f"{'.'.join(map(str, detail['loc']))}: {detail['msg']}"
            if detail
            else one_line(str(exc))
        )
        return {"id": raw_id, "turns": [], "error": f"line {n} is not a valid task ({reason})"}
    turns: list[dict[str, Any]] = []
    session: Session | None = None
    try:
        session = Session.create(root, f"{n:05d}-{_slug(task.id)}")
        for handle, path in task.images.items():
            session.load(_resolve(path, base_dir), handle)
        agent = Agent(
            factory(task.id),
            session,
            max_steps=settings.max_steps,
            system_prompt=settings.system_prompt(),
        )
        for turn_spec in task.turns:
            turn = agent.run_turn(turn_spec.user)
            turns.append(_turn_record(turn))
            if turn.stopped == "brain_error":
                return {"id": task.id, "turns": turns, "error": f"brain failed: {turn.error}"}
        return {"id": task.id, "turns": turns, "error": None}
    except Exception as exc:  # any failure of one task is its own error line
        return {
            "id": task.id,
            "turns": turns,
            "error": f"{type(exc).__name__}: {one_line(str(exc))}",
        }
    finally:
        if session is not None:
            session.close()


def _turn_record(turn: TurnResult) -> dict[str, Any]:
    return {
        "user": turn.user,
        "tool_calls": [{"name": c.name, "args": c.args, "ok": c.ok} for c in turn.tool_calls],
        "answer": turn.answer,
        "artifacts": list(turn.artifacts),
    }


def _resolve(path: str, base_dir: Path) -> Path:
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return base_dir / candidate


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:60] or "task"
