"""The server-side state behind the chat page: which brain a browser chose, the brains
built so far, and the open conversations (a session plus the chat as shown).

Kept apart from `agent.ui` (the page and its handlers) so it is usable and testable
without building any Gradio component.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agent.brains import make_brain
from agent.brains.base import Brain
from agent.session import Session, check_session_id
from agent.settings import Backend, Settings
from agent.ui_render import Message, history_from_session
from tools.errors import EOError

log = logging.getLogger(__name__)

_LOCKED_BACKENDS = ("local", "hf")  # one in-process model: one generation at a time


class BrainChoice(BaseModel):
    """What the settings panel chooses; it applies from the next turn, no restart."""

    backend: Backend = Field(description="Which brain answers.")
    model: str = Field(
        default="",
        description="local: folder of the converted model; hf: path or hub id; openai: the "
        "model name the server serves.",
    )
    server_url: str = Field(default="", description="OpenAI-compatible server, ending in /v1.")
    adapter_path: str = Field(default="", description="LoRA adapter folder (local and hf).")
    script_path: str = Field(default="", description="Plan file the scripted brain replays.")

    @classmethod
    def from_settings(cls, settings: Settings) -> BrainChoice:
        model = {
            "local": settings.local_model_path,
            "hf": settings.hf_model,
            "openai": settings.openai_model,
        }.get(settings.backend)
        return cls(
            backend=settings.backend,
            model=str(model or ""),
            server_url=settings.openai_base_url,
            adapter_path=str(settings.adapter_path or ""),
            script_path=str(settings.script_path or ""),
        )

    def apply(self, base: Settings) -> Settings:
        update: dict[str, Any] = {
            "backend": self.backend,
            "adapter_path": self.adapter_path.strip() or None,
            "script_path": self.script_path.strip() or None,
        }
        if self.server_url.strip():
            update["openai_base_url"] = self.server_url.strip()
        model = self.model.strip()
        if self.backend == "local":
            update["local_model_path"] = model or None
        elif self.backend == "hf":
            update["hf_model"] = model or None
        elif self.backend == "openai" and model:
            update["openai_model"] = model
        data = base.model_dump()
        data.update(update)
        return Settings.model_validate(data)


class _SerialBrain:
    """One in-process model answers one conversation at a time."""

    def __init__(self, brain: Brain) -> None:
        self._brain, self._lock = brain, threading.Lock()
        self.name = brain.name
        self.accepts_images = brain.accepts_images

    def respond(self, messages: Any, tools: Any, *, on_token: Any = None) -> Any:
        with self._lock:
            return self._brain.respond(messages, tools, on_token=on_token)


class Brains:
    """Brains built from a choice, kept so that switching back costs nothing."""

    def __init__(self, base: Settings) -> None:
        self.base = base
        self._built: dict[str, Brain] = {}
        self._lock = threading.Lock()

    def get(self, choice: BrainChoice) -> tuple[Brain, Settings]:
        settings = choice.apply(self.base)
        key = choice.model_dump_json()
        with self._lock:  # building a local model twice at once would double its memory
            if key not in self._built:
                brain = make_brain(settings)
                self._built[key] = (
                    _SerialBrain(brain) if settings.backend in _LOCKED_BACKENDS else brain
                )
            return self._built[key], settings


CHAT_FILE = "chat_view.json"  # the chat as shown (upload notes, tool times), beside session.json


@dataclass
class Conversation:
    """A session and its chat as the page shows it. The chat is kept on the server (the
    browser sends only new messages) and saved beside the session, so a reload, another
    client or a restart shows the same messages, tool durations and upload notes."""

    session: Session
    chat: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, session: Session) -> Conversation:
        path = session.workspace / CHAT_FILE
        chat: list[Message] = []
        if path.exists():
            try:
                chat = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                chat = []
        if not isinstance(chat, list) or (session.messages and not chat):
            chat = history_from_session(session)  # written by the CLI, or damaged
        return cls(session, chat)

    def save(self) -> None:
        self.session.save()
        dest = self.session.workspace / CHAT_FILE
        tmp = dest.with_suffix(".json.part")
        tmp.write_text(json.dumps(self.chat, ensure_ascii=False, default=str), encoding="utf-8")
        os.replace(tmp, dest)


class Conversations:
    """Open sessions by id, the least recently used closed beyond `capacity`."""

    def __init__(self, root: Path, capacity: int = 64) -> None:
        self.root, self.capacity = root, capacity
        self._open: OrderedDict[str, Conversation] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: str | None) -> Conversation:
        with self._lock:
            if session_id:
                try:
                    check_session_id(session_id)
                except EOError:
                    session_id = None  # a tampered id: start afresh rather than fail
            if session_id and session_id in self._open:
                self._open.move_to_end(session_id)
                return self._open[session_id]
            try:
                session = Session.open(self.root, session_id)
            except EOError:  # an unreadable session file: a new session, not a dead page
                log.warning("cannot resume session %s; starting a new one", session_id)
                session = Session.create(self.root)
            conversation = Conversation.open(session)
            self._open[session.id] = conversation
            while len(self._open) > self.capacity:
                _, old = self._open.popitem(last=False)
                old.session.close()
            return conversation
