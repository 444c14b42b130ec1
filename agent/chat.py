"""`eoagent chat`: a conversation in the terminal, with tool activity streamed.

    eoagent chat --image post=flood.tif --image pre=before.tif
    eoagent chat --session 20250101-120000-ab12cd      # resume

Inside the chat: /handles lists scenes and results, /load handle=path loads a file,
/quit (or Ctrl-D) leaves. The session is saved after every turn.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from agent.loop import Agent, AgentEvent
from agent.session import Session, handle_from_stem
from agent.settings import Backend, Settings
from tools.errors import ArgumentError, EOError, one_line

HELP = "Commands: /handles, /load handle=path, /help, /quit"


def parse_image_arg(text: str) -> tuple[str | None, Path]:
    """`post=path/to.tif` -> ("post", path); a bare path -> (None, path): its stem is the handle."""
    handle, sep, path = text.partition("=")
    if sep and handle.strip() and path.strip() and "/" not in handle:
        return handle.strip(), Path(path.strip())
    if sep and not (handle.strip() and path.strip()):
        raise ArgumentError(f"Bad image '{text}'; write it as handle=path, e.g. post=flood.tif.")
    return None, Path(text)


class _Printer:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.streamed = False

    def __call__(self, event: AgentEvent) -> None:
        w = self.out.write
        if event.kind == "turn_start":
            self.streamed = False
        elif event.kind == "token":
            if not self.streamed:
                w("eoagent> ")
            self.streamed = True
            w(event.text)
        elif event.kind == "tool_start":
            args = ", ".join(f"{k}={v!r}" for k, v in (event.args or {}).items())
            w(f"  -> {event.tool}({args})\n")
        elif event.kind == "tool_end":
            took = f"{event.duration_s:.1f} s" if event.duration_s is not None else ""
            if event.ok:
                w(f"  ok {event.tool} -> {event.handle} ({took})\n")
            else:
                w(f"  failed {event.tool}: {one_line(event.text)[:300]}\n")
        elif event.kind == "error":
            w(f"  error: {event.text}\n")
        elif event.kind == "answer":
            w("\n" if self.streamed else f"eoagent> {event.text}\n")
        self.out.flush()


def chat(
    settings: Settings | None = None,
    *,
    images: Sequence[str] = (),
    session_id: str | None = None,
    backend: Backend | None = None,
    input_fn: Callable[[str], str] = input,
    out: TextIO | None = None,
) -> int:
    """Run a terminal chat until /quit or end of input; returns an exit status."""
    from agent.brains import make_brain

    out = out or sys.stdout
    settings = settings or Settings()
    if backend is not None:
        settings = settings.model_copy(update={"backend": backend})
    session = Session.open(settings.workspace_root(), session_id)
    try:
        for text in images:
            handle, path = parse_image_arg(text)
            out.write(f"loaded {session.load(path, handle)} <- {path}\n")
        session.save()
        agent = Agent(
            make_brain(settings),
            session,
            max_steps=settings.max_steps,
            system_prompt=settings.system_prompt(),
            on_event=_Printer(out),
        )
        out.write(f"session {session.id} in {session.workspace}\n{HELP}\n")
        while True:
            try:
                line = input_fn("you> ").strip()
            except (EOFError, KeyboardInterrupt):
                out.write("\n")
                break
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            if line == "/help":
                out.write(HELP + "\n")
            elif line == "/handles":
                out.write(session.describe() + "\n")
            elif line.startswith("/load "):
                try:
                    handle, path = parse_image_arg(line[len("/load ") :].strip())
                    out.write(
                        f"loaded {session.load(path, handle or handle_from_stem(path.stem))}\n"
                    )
                    session.save()
                except EOError as exc:
                    out.write(f"error: {one_line(str(exc))}\n")
            else:
                agent.run_turn(line)
        out.write(f"session saved: resume with --session {session.id}\n")
        return 0
    finally:
        session.close()
