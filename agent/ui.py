"""The Gradio chat over the agent: `python app.py`, `eoagent serve`, or `serve(settings)`.

No analysis happens here. A browser holds only its session id (and its brain choice) in
localStorage; the conversation, scenes and results live in that session's workspace on
disk (`Session.resume`), so a reload shows the same conversation and two browsers never
share a scene. Each turn runs `Agent.run_turn` in a worker thread; its events become chat
messages (tool steps as collapsible messages with arguments, duration and status) while
the turn runs, and the results panel (overlays, areas and counts, downloads) follows.
"""

from __future__ import annotations

import os

# Before gradio is imported: it reads these at import time. Nothing leaves the machine.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hashlib
import logging
import queue
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from agent.brains import BrainError
from agent.loop import Agent, AgentEvent
from agent.session import Session
from agent.settings import Settings
from agent.ui_render import (
    TABLE_HEADERS,
    Message,
    TurnView,
    download_files,
    file_message,
    note,
    overlay_images,
    result_rows,
)
from agent.ui_state import BrainChoice, Brains, Conversations
from agent.ui_uploads import DEFAULT_MAX_UPLOAD_MB, UploadError, load_upload
from tools.errors import EOError, one_line
from tools.raster import MAX_IMAGE_PIXELS

log = logging.getLogger(__name__)

TITLE = "eoagent: ask your satellite images"
EXAMPLES = [
    "Map the flood between pre and post and give the flooded area in hectares.",
    "How much of post is water? Show me the map.",
    "Burn severity between pre and post: how many hectares per class?",
    "Export flood_1 as GeoJSON and as a GeoTIFF.",
    "Which sensor and bands does post have?",
]
_TICK_S = 0.5  # how often a running tool's elapsed time is refreshed


def _servable(path: str | Path) -> str:
    """A copy of a workspace file in Gradio's cache, so the browser may fetch it without
    opening the whole workspace root (every session's files) to direct downloads."""
    from gradio.processing_utils import save_file_to_cache
    from gradio.utils import get_upload_folder

    return save_file_to_cache(path, get_upload_folder())


def _secret(root: Path) -> str:
    """A stable key for the browser state, so sessions survive a server restart."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".ui_secret"
    if not path.exists():
        path.write_text(secrets.token_hex(16), encoding="utf-8")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:32]


class EOApp:
    """The handlers behind the page; one per server."""

    def __init__(self, settings: Settings, *, max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB) -> None:
        self.settings = settings
        self.root = settings.workspace_root()
        self.conversations = Conversations(self.root)
        self.brains = Brains(settings)
        self.max_bytes = max_upload_mb * 2**20
        self.max_upload_mb = max_upload_mb
        self.default_choice = BrainChoice.from_settings(settings)

    def warm_default_brain(self) -> None:
        """Build the default brain now; a failure is reported on the first turn instead."""
        try:
            self.brains.get(self.default_choice)
        except Exception:  # the turn that needs it shows the error to the user
            log.info("default brain could not be built ahead of time", exc_info=True)

    def _choice(self, data: dict[str, Any] | None) -> BrainChoice:
        try:
            return BrainChoice.model_validate(data) if data else self.default_choice
        except ValueError:
            return self.default_choice

    # -- panels -------------------------------------------------------------------

    def panels(self, session: Session) -> tuple[Any, Any, Any, Any]:
        images = [(_servable(p), caption) for p, caption in overlay_images(session)]
        latest = images[-1][0] if images else None
        rows = result_rows(session)
        files = [_servable(p) for p in download_files(session)]
        return latest, images or None, rows or [["", "", "", None, ""]], files or None

    def session_line(self, session: Session, choice: BrainChoice) -> str:
        held = ", ".join(f"`{h}`" for h in session.state.files) or "none yet"
        return f"Session `{session.id}` · brain **{choice.backend}** · scenes: {held}"

    # -- events -------------------------------------------------------------------

    def restore(self, session_id: str | None, choice_data: dict[str, Any] | None) -> tuple:
        """The page's state on load: the browser's session (or a new one) and its brain."""
        conversation = self.conversations.get(session_id)
        session = conversation.session
        choice = self._choice(choice_data)
        return (
            session.id,
            choice.model_dump(),
            _served(conversation.chat),
            *self.panels(session),
            self.session_line(session, choice),
            choice.backend,
            choice.model,
            choice.server_url,
            choice.adapter_path,
            choice.script_path,
        )

    def new_session(self, choice_data: dict[str, Any] | None) -> tuple:
        return self.restore(Session.create(self.root).id, choice_data)

    def apply_settings(
        self,
        backend: str,
        model: str,
        server_url: str,
        adapter_path: str,
        script_path: str,
        old: dict[str, Any] | None,
    ) -> tuple[dict[str, Any], str]:
        try:
            choice = BrainChoice(
                backend=backend,  # type: ignore[arg-type]
                model=model or "",
                server_url=server_url or "",
                adapter_path=adapter_path or "",
                script_path=script_path or "",
            )
            started = time.perf_counter()
            self.brains.get(choice)
        except (BrainError, EOError, ValueError, OSError) as exc:
            kept = self._choice(old).backend
            return old or self.default_choice.model_dump(), (
                f"⚠️ Not applied: {one_line(str(exc))} (still using **{kept}**)."
            )
        took = time.perf_counter() - started
        return choice.model_dump(), f"✅ Brain **{choice.backend}** ready ({took:.1f} s)."

    def chat(
        self,
        message: dict[str, Any] | str | None,
        session_id: str | None,
        choice_data: dict[str, Any] | None,
    ) -> Iterator[tuple]:
        """One user message: its attachments loaded, then a turn of the agent, streamed."""
        if isinstance(message, str):
            message = {"text": message, "files": []}
        message = message or {"text": "", "files": []}
        text = (message.get("text") or "").strip()
        files = [_file_path(f) for f in message.get("files") or []]
        conversation = self.conversations.get(session_id)
        session, choice = conversation.session, self._choice(choice_data)
        asked: list[Message] = [
            {"role": "user", "content": f"📎 {_original_name(path)}"} for path in files
        ]
        if text:
            asked.append({"role": "user", "content": text})

        def frame(view: list[Message], *, final: bool = False) -> tuple:
            box = gr.MultimodalTextbox(value=None, interactive=final)
            panels = self.panels(session) if final else (gr.skip(),) * 4
            line = self.session_line(session, choice) if final else gr.skip()
            shown = conversation.chat if final else conversation.chat + asked + view
            return (_served(shown), box, session.id, *panels, line)

        if not asked:
            yield frame([], final=True)
            return
        view: list[Message] = []
        yield frame(view)
        if not conversation.lock.acquire(timeout=0.1):
            view.append(note("⏳ Another tab of this session is running a turn; waiting…"))
            yield frame(view)
            conversation.lock.acquire()
            view.clear()
        try:
            loaded = self._load_files(session, files, text, view)
            yield frame(view)
            question = _without_assignments(text)
            if question:
                yield from self._turn(session, choice, question, loaded, view, frame)
            conversation.chat.extend(asked + view)
            try:
                conversation.save()
            except OSError as exc:
                conversation.chat.append(note(f"⚠️ Could not save the session: {exc}"))
        finally:
            conversation.lock.release()
        yield frame(view, final=True)

    def load_examples(self, session_id: str | None, choice_data: dict[str, Any] | None) -> tuple:
        """The generated flood-and-fire pair (Sentinel-2 pre/post, Sentinel-1 post)."""
        from tools.demo_data import make_demo_scenes

        conversation = self.conversations.get(session_id)
        session, choice = conversation.session, self._choice(choice_data)
        with conversation.lock:
            scenes = make_demo_scenes(session.workspace / "uploads" / "example")
            for handle, path in (
                ("pre", scenes.pre),
                ("post", scenes.post),
                ("post_sar", scenes.post_sar),
            ):
                session.load(path, handle)
                conversation.chat.append(
                    note(f"Loaded **`{handle}`** ← {path.name}", title=f"📥 {handle} ← example")
                )
            conversation.chat.append(
                note(
                    "Example scenes loaded: a river valley (Sentinel-2 L2A on 1 Aug and 4 Sep "
                    "2023, Sentinel-1 on 4 Sep) that floods while a fire burns the hills. Try "
                    "one of the questions below."
                )
            )
            conversation.save()
        return (
            _served(conversation.chat),
            gr.MultimodalTextbox(value=None, interactive=True),
            session.id,
            *self.panels(session),
            self.session_line(session, choice),
        )

    def _load_files(
        self, session: Session, files: list[str], text: str, view: list[Message]
    ) -> list[str]:
        loaded = []
        for path in files:
            name = _original_name(path)
            try:
                upload = load_upload(
                    session,
                    path,
                    name,
                    text=text,
                    max_bytes=self.max_bytes,
                    max_pixels=MAX_IMAGE_PIXELS,
                )
            except UploadError as exc:
                view.append(note(f"⚠️ {exc}", title=f"⚠️ Upload refused: {name}"))
                continue
            loaded.append(upload.handle)
            view.append(
                note(
                    f"Loaded **`{upload.handle}`** ← {name}: {upload.summary}. "
                    f"Refer to it as `{upload.handle}`.",
                    title=f"📥 {upload.handle} ← {name}",
                )
            )
        return loaded

    def _turn(
        self,
        session: Session,
        choice: BrainChoice,
        question: str,
        images: list[str],
        view: list[Message],
        frame: Any,
    ) -> Iterator[tuple]:
        try:
            brain, settings = self.brains.get(choice)
        except (BrainError, EOError, ValueError, OSError) as exc:
            view.append(
                note(
                    f"⚠️ The **{choice.backend}** brain could not start: {one_line(str(exc))}. "
                    "Choose another backend, model or plan file under ⚙️ Settings."
                )
            )
            return
        before = set(session.state.results)
        agent = Agent(
            brain,
            session,
            max_steps=settings.max_steps,
            system_prompt=settings.system_prompt(),
        )
        events: queue.Queue[AgentEvent | None] = queue.Queue()

        def work() -> None:
            try:
                agent.run_turn(question, images=images, on_event=events.put)
            finally:
                events.put(None)

        worker = threading.Thread(target=work, name=f"turn-{session.id}", daemon=True)
        worker.start()
        turn = TurnView()
        while True:
            try:
                event = events.get(timeout=_TICK_S)
            except queue.Empty:
                if turn.tick():
                    yield frame(view + turn.messages)
                continue
            if event is None:
                break
            turn.apply(event)
            if event.kind != "done":
                yield frame(view + turn.messages)
        worker.join()
        view.extend(turn.messages)
        view.extend(self._new_result_messages(session, before))

    def _new_result_messages(self, session: Session, before: set[str]) -> list[Message]:
        out = []
        for handle, stored in session.state.results.items():
            if handle in before:
                continue
            for path in stored.files:
                if path.endswith(".png") and Path(path).exists():
                    out.append(file_message(path, f"{handle} overlay"))
            exported = stored.data.get("path")
            if stored.tool == "export" and isinstance(exported, str) and Path(exported).exists():
                out.append(file_message(exported, Path(exported).name))
        return out


def _served(chat: list[Message]) -> list[Message]:
    """The chat with its files (kept as workspace paths) copied where Gradio serves them;
    a file gone since (a deleted result) becomes a line of text."""
    out = []
    for message in chat:
        content = message.get("content")
        if isinstance(content, dict) and "path" in content:
            path = str(content["path"])
            if Path(path).exists():
                message = {**message, "content": {**content, "path": _servable(path)}}
            else:
                message = {**message, "content": f"({Path(path).name} is no longer available)"}
        out.append(message)
    return out


def _file_path(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("path"))
    return str(getattr(item, "path", item))


def _original_name(path: str) -> str:
    # Gradio keeps an upload's own name inside its hashed cache folder.
    return Path(path).name


def _without_assignments(text: str) -> str:
    from agent.ui_uploads import _ASSIGNMENT

    return " ".join(_ASSIGNMENT.sub(" ", text).split())


CSS = """
#eo-chat .message img { max-height: 360px; }
footer { display: none !important; }
"""


def build_app(
    settings: Settings | None = None, *, max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB
) -> gr.Blocks:
    """The page. `settings` gives the default brain and the workspace root."""
    settings = settings or Settings()
    app = EOApp(settings, max_upload_mb=max_upload_mb)
    secret = _secret(app.root)
    with gr.Blocks(title="eoagent", analytics_enabled=False) as demo:
        demo.eoapp = app  # type: ignore[attr-defined]
        browser_sid = gr.BrowserState(None, storage_key="eoagent_session", secret=secret)
        browser_choice = gr.BrowserState(None, storage_key="eoagent_brain", secret=secret)
        sid = gr.State(None)
        choice = gr.State(app.default_choice.model_dump())
        gr.Markdown(
            f"## 🛰️ {TITLE}\nAttach GeoTIFF, PNG or JPEG scenes (several at once; write "
            "`post=file.tif` to name one), then ask. Each tool step opens to show its "
            "arguments, time and result."
        )
        line = gr.Markdown(elem_id="eo-session")
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(
                    label="Conversation",
                    elem_id="eo-chat",
                    height=620,
                    buttons=["copy"],
                    placeholder="Load the example flood scenes or attach your own, then ask.",
                    feedback_options=None,
                )
                box = gr.MultimodalTextbox(
                    elem_id="eo-input",
                    file_count="multiple",
                    # No file_types: Gradio would refuse other files with a bare toast;
                    # our own check answers in the chat with what was wrong instead.
                    placeholder="Ask about your scenes, or attach GeoTIFF / PNG / JPEG "
                    "(GeoJSON for building footprints)",
                    show_label=False,
                    sources=["upload"],
                )
                gr.Examples(EXAMPLES, inputs=[box], label="Disaster-response questions")
                with gr.Row():
                    example_btn = gr.Button("Load example flood scenes (pre, post, post_sar)")
                    new_btn = gr.Button("New session", variant="secondary")
            with gr.Column(scale=2):
                overlay = gr.Image(
                    label="Latest map", elem_id="eo-map", interactive=False, height=360
                )
                gallery = gr.Gallery(label="All maps", columns=4, height=140, elem_id="eo-maps")
                table = gr.Dataframe(
                    headers=TABLE_HEADERS,
                    label="Areas and counts",
                    interactive=False,
                    elem_id="eo-table",
                    column_widths=["14%", "24%", "32%", "16%", "14%"],
                    wrap=True,
                )
                downloads = gr.File(
                    label="Downloads (GeoTIFF, GeoJSON)",
                    file_count="multiple",
                    interactive=False,
                    elem_id="eo-downloads",
                )
                with gr.Accordion("⚙️ Settings (apply from the next turn)", open=False):
                    backend = gr.Dropdown(
                        ["local", "hf", "openai", "scripted"], label="Brain backend"
                    )
                    model = gr.Textbox(label="Model path / hub id / served model name")
                    server = gr.Textbox(label="Server URL (openai backend)")
                    adapter = gr.Textbox(label="LoRA adapter path (local, hf)")
                    script = gr.Textbox(label="Plan file (scripted backend)")
                    apply_btn = gr.Button("Apply", variant="primary")
                    status = gr.Markdown()

        panel_outputs = [overlay, gallery, table, downloads]
        restore_outputs = [sid, choice, chatbot, *panel_outputs, line]
        restore_outputs += [backend, model, server, adapter, script]
        demo.load(
            app.restore,
            [browser_sid, browser_choice],
            restore_outputs,
            api_visibility="private",
        ).then(lambda s: s, sid, browser_sid, api_visibility="private")
        chat_event = box.submit(
            app.chat,
            [box, sid, choice],
            [chatbot, box, sid, *panel_outputs, line],
            api_name="chat",
            concurrency_limit=8,
            show_progress="minimal",
        )
        chat_event.then(lambda s: s, sid, browser_sid, api_visibility="private")
        apply_btn.click(
            app.apply_settings,
            [backend, model, server, adapter, script, choice],
            [choice, status],
            api_name="apply_settings",
        ).then(lambda c: c, choice, browser_choice, api_visibility="private")
        example_btn.click(
            app.load_examples,
            [sid, choice],
            [chatbot, box, sid, *panel_outputs, line],
            api_name="load_examples",
        ).then(lambda s: s, sid, browser_sid, api_visibility="private")
        new_btn.click(app.new_session, [choice], restore_outputs, api_visibility="private").then(
            lambda s: s, sid, browser_sid, api_visibility="private"
        )
    return demo


def serve(
    settings: Settings | None = None,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    *,
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
    block: bool = True,
    quiet: bool = False,
) -> gr.Blocks:
    """Start the app on `host:port` (7860; None picks a free port). With `block=False` it
    returns at once with the server running in a thread; `demo.close()` stops it."""
    demo = build_app(settings, max_upload_mb=max_upload_mb)
    # Load the default brain while the page starts, not on the first question: the
    # embedded model converts once (minutes) and loads in seconds after that.
    app: EOApp = demo.eoapp  # type: ignore[attr-defined]
    threading.Thread(target=app.warm_default_brain, name="warm-brain", daemon=True).start()
    demo.queue(default_concurrency_limit=8)
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=not block,
        show_error=True,
        max_file_size=f"{max_upload_mb}mb",
        quiet=quiet,
        footer_links=[],
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        enable_monitoring=False,
        css=CSS,
        theme=gr.themes.Default(),
    )
    return demo
