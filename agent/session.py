"""A conversation's workspace: loaded scenes, tool results, history, on disk.

A session lives in `<root>/<session_id>/`: `session.json` (the state, rewritten
atomically after every turn), `results/` (what tools write, one stem per result handle)
and `exports/`. Scenes are named by short handles ("pre", "post", or a file's stem) and
every tool result by a handle such as `flood_1` or `ndvi_2`, which later calls can name.

Paths that a model writes into tool arguments are untrusted: they must resolve (after
following symlinks) inside the workspace, or be one of the files the user loaded.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from tools.errors import ArgumentError, InputFileError

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

    from tools.raster import Scene

SESSION_FILE = "session.json"
STATE_VERSION = 1
VECTOR_SUFFIXES = (".geojson", ".json")
_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$")
_HANDLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_session_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def check_session_id(session_id: str) -> str:
    if not _SESSION_ID.match(session_id):
        raise ArgumentError(
            f"Session id '{session_id}' may hold only letters, digits, '-' and '_' (at most 80); "
            "pick another id."
        )
    return session_id


def handle_from_stem(stem: str) -> str:
    handle = re.sub(r"[^a-z0-9_]+", "_", stem.lower()).strip("_")[:40] or "scene"
    return handle if handle[0].isalpha() else f"s_{handle}"[:40]


def _normal(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


# A file name a model may choose for an export: no folders, no shell characters.
_EXPORT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class LoadedFile(BaseModel):
    """A file the user gave the session: a scene (raster) or a vector (footprints)."""

    handle: str
    path: str
    kind: Literal["scene", "vector"] = "scene"
    band_map: dict[str, int | str] | None = None
    sensor: str | None = None


class StoredResult(BaseModel):
    """A tool result kept under a handle."""

    handle: str
    tool: str
    args: dict[str, Any]
    data: dict[str, Any]
    files: list[str] = Field(default_factory=list)
    created: str = Field(default_factory=_now)


class SessionState(BaseModel):
    version: int = STATE_VERSION
    id: str
    created: str = Field(default_factory=_now)
    updated: str = Field(default_factory=_now)
    files: dict[str, LoadedFile] = Field(default_factory=dict)
    results: dict[str, StoredResult] = Field(default_factory=dict)
    messages: list[dict[str, Any]] = Field(default_factory=list)


class Session:
    """One conversation's state and workspace. Create with `Session.create` or
    `Session.resume`; call `save()` after each turn (the agent loop does)."""

    def __init__(self, root: str | Path, state: SessionState) -> None:
        self.root = Path(root).expanduser()
        self.state = state
        self.workspace = (self.root / check_session_id(state.id)).resolve()
        self.messages: list[BaseMessage] = _messages_from_dicts(state.messages)
        self._scenes: dict[str, Scene] = {}
        self._pending: str | None = None

    # -- lifecycle ------------------------------------------------------------------

    @classmethod
    def create(cls, root: str | Path, session_id: str | None = None) -> Session:
        session_id = check_session_id(session_id or new_session_id())
        session = cls(root, SessionState(id=session_id))
        if (session.workspace / SESSION_FILE).exists():
            raise ArgumentError(
                f"Session '{session_id}' already exists under {session.root}; resume it or "
                "choose another id."
            )
        session.workspace.mkdir(parents=True, exist_ok=True)
        session.save()
        return session

    @classmethod
    def resume(cls, root: str | Path, session_id: str) -> Session:
        check_session_id(session_id)
        path = Path(root).expanduser() / session_id / SESSION_FILE
        if not path.exists():
            known = sorted(p.parent.name for p in Path(root).expanduser().glob(f"*/{SESSION_FILE}"))
            hint = f"known sessions: {', '.join(known[-10:])}" if known else "there are none yet"
            raise ArgumentError(
                f"No session '{session_id}' under {root} ({hint}); start a new one."
            )
        try:
            state = SessionState.model_validate_json(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InputFileError(
                f"Session file {path} is unreadable ({str(exc).splitlines()[0]}); "
                "start a new session."
            ) from exc
        return cls(root, state)

    @classmethod
    def open(cls, root: str | Path, session_id: str | None = None) -> Session:
        """Resume `session_id` when it exists, otherwise create it (or a new id)."""
        if session_id and (Path(root).expanduser() / session_id / SESSION_FILE).exists():
            return cls.resume(root, session_id)
        return cls.create(root, session_id)

    @property
    def id(self) -> str:
        return self.state.id

    def save(self) -> Path:
        """Write the state atomically: a temporary file in the workspace, then os.replace."""
        self.state.updated = _now()
        self.state.messages = _messages_to_dicts(self.messages)
        self.workspace.mkdir(parents=True, exist_ok=True)
        dest = self.workspace / SESSION_FILE
        fd, tmp_name = tempfile.mkstemp(prefix=".session.", suffix=".part", dir=self.workspace)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(self.state.model_dump_json(indent=1))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        return dest

    def close(self) -> None:
        for scene in self._scenes.values():
            scene.close()
        self._scenes.clear()

    # -- files the user loads -------------------------------------------------------

    def load(
        self,
        path: str | Path,
        handle: str | None = None,
        *,
        band_map: dict[str, int | str] | None = None,
        sensor: str | None = None,
    ) -> str:
        """Register a user's file under a handle (its stem by default) and return it.
        Rasters are opened at once, so a bad file fails here rather than mid-conversation."""
        resolved = Path(path).expanduser().resolve()
        if not resolved.exists():
            raise InputFileError(f"No such file or folder: {path}; check the path.")
        kind: Literal["scene", "vector"] = (
            "vector" if resolved.suffix.lower() in VECTOR_SUFFIXES else "scene"
        )
        if handle is not None:
            if not _HANDLE.match(handle):
                raise ArgumentError(
                    f"Handle '{handle}' must start with a letter and hold letters, digits or '_'."
                )
            if handle in self.state.results:
                raise ArgumentError(f"'{handle}' already names a result; choose another handle.")
        else:
            handle = self._free_handle(handle_from_stem(resolved.stem))
        entry = LoadedFile(
            handle=handle, path=str(resolved), kind=kind, band_map=band_map, sensor=sensor
        )
        if kind == "scene":
            scene = self._open(entry)
            old = self._scenes.pop(handle, None)
            if old is not None:
                old.close()
            self._scenes[handle] = scene
        self.state.files[handle] = entry
        return handle

    def _free_handle(self, base: str) -> str:
        taken = set(self.state.files) | set(self.state.results)
        handle, n = base, 2
        while handle in taken:
            handle, n = f"{base}_{n}", n + 1
        return handle

    @staticmethod
    def _open(entry: LoadedFile) -> Scene:
        from tools.raster import open_scene

        return open_scene(entry.path, band_map=entry.band_map, sensor=entry.sensor)

    def scene_handle(self, ref: str) -> str:
        """The handle a reference names: a handle (case and punctuation forgiven), a
        loaded file's name or stem, or a raster path inside the workspace (loaded now)."""
        scenes = {h: f for h, f in self.state.files.items() if f.kind == "scene"}
        found = self._match(ref, scenes, lambda f: (Path(f.path).name, Path(f.path).stem))
        if found:
            return found
        if _looks_like_path(ref):
            path = self.safe_path(ref)
            for handle, entry in scenes.items():
                if Path(entry.path) == path:
                    return handle
            return self.load(path)
        if ref.strip() in self.state.results:
            raise ArgumentError(
                f"'{ref}' is a result, not a scene; give a scene handle "
                f"({', '.join(scenes) or 'none loaded'})."
            )
        raise ArgumentError(_unknown("scene", ref, list(scenes), "ask the user to load an image"))

    def scene(self, ref: str) -> Scene:
        handle = self.scene_handle(ref)
        if handle not in self._scenes:
            self._scenes[handle] = self._open(self.state.files[handle])
        return self._scenes[handle]

    def vector(self, ref: str) -> Path:
        vectors = {h: f for h, f in self.state.files.items() if f.kind == "vector"}
        found = self._match(ref, vectors, lambda f: (Path(f.path).name, Path(f.path).stem))
        if found:
            return Path(vectors[found].path)
        if _looks_like_path(ref):
            path = self.safe_path(ref)
            if not path.is_file():
                raise InputFileError(f"No such file: {ref}; check the name.")
            return path
        raise ArgumentError(
            _unknown(
                "vector file",
                ref,
                list(vectors),
                "ask the user to load building footprints (GeoJSON)",
            )
        )

    # -- results ------------------------------------------------------------------

    def result(self, ref: str) -> StoredResult:
        found = self._match(ref, self.state.results, lambda r: ())
        if found:
            return self.state.results[found]
        if ref.strip() in self.state.files:
            raise ArgumentError(f"'{ref}' is a loaded file, not a result; run a tool on it first.")
        raise ArgumentError(_unknown("result", ref, list(self.state.results), "run a tool first"))

    def begin_call(self, prefix: str) -> str:
        """Reserve the handle the next result will get (`flood_1`, `flood_2`...)."""
        n = 1
        while f"{prefix}_{n}" in self.state.results or f"{prefix}_{n}" in self.state.files:
            n += 1
        self._pending = f"{prefix}_{n}"
        return self._pending

    def output_path(self, suffix: str) -> Path:
        """Where the running tool writes its main output (sidecars go beside it)."""
        if self._pending is None:
            raise RuntimeError("output_path() outside a tool call; call begin_call() first")
        folder = self.workspace / "results"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{self._pending}{suffix}"

    def store_result(self, tool: str, args: dict[str, Any], result: BaseModel) -> StoredResult:
        if self._pending is None:
            raise RuntimeError("store_result() outside a tool call; call begin_call() first")
        handle, self._pending = self._pending, None
        folder = self.workspace / "results"
        files = (
            sorted(
                str(p)
                for p in folder.glob(f"{handle}.*")
                if p.stem == handle and ".part" not in p.suffixes
            )
            if folder.exists()
            else []
        )
        stored = StoredResult(
            handle=handle, tool=tool, args=args, data=result.model_dump(mode="json"), files=files
        )
        self.state.results[handle] = stored
        return stored

    def abort_call(self) -> None:
        self._pending = None

    def export_path(self, name: str) -> Path:
        if not _EXPORT_NAME.fullmatch(name) or ".." in name:
            raise ArgumentError(
                f"Export file name '{name}' is refused: give a plain name such as "
                "flood_1.geojson (letters, digits, '.', '_', '-'; no folders, no shell "
                "characters), or leave the name out."
            )
        path = self.safe_path(str(Path("exports") / name), write=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # -- path policy --------------------------------------------------------------

    def safe_path(self, text: str | Path, *, write: bool = False) -> Path:
        """Resolve a path a model or task file wrote; refuse anything outside the
        workspace (and, for reading, other than a file the user loaded)."""
        text = str(text).strip()
        allowed = (
            "inside this session's workspace"
            if write
            else ("inside this session's workspace or one of the loaded files")
        )
        if not text or "\x00" in text:
            raise ArgumentError(
                "Empty or malformed path; name a loaded scene by its handle instead."
            )
        raw = Path(text).expanduser()
        if ".." in raw.parts:
            raise ArgumentError(
                f"Path '{text}' is refused: '..' may not climb out of the workspace. Use a handle "
                f"(loaded: {', '.join(self.state.files) or 'none'}) or a path {allowed}."
            )
        resolved = (raw if raw.is_absolute() else self.workspace / raw).resolve()
        if resolved == self.workspace or self.workspace in resolved.parents:
            return resolved
        if not write and self._is_loaded(resolved):
            return resolved
        raise ArgumentError(
            f"Path '{text}' is refused: it lies outside this session's workspace and is not a "
            f"loaded file. Use a handle (loaded: {', '.join(self.state.files) or 'none'}) or a "
            f"path {allowed}."
        )

    def _is_loaded(self, resolved: Path) -> bool:
        for entry in self.state.files.values():
            loaded = Path(entry.path)
            if resolved == loaded or (loaded.is_dir() and loaded in resolved.parents):
                return True
        return False

    # -- lookups ------------------------------------------------------------------

    @staticmethod
    def _match(ref: str, table: dict[str, Any], names: Any) -> str | None:
        """Repair a handle reference: quotes, '$'/'@', case, separators, file names."""
        text = str(ref).strip().strip("'\"`").lstrip("$@").strip()
        if text in table:
            return text
        key = _normal(text)
        hits = [h for h in table if _normal(h) == key]
        if len(hits) != 1:
            hits = [
                h
                for h, item in table.items()
                if any(n == text or _normal(n) == key for n in names(item))
            ]
        return hits[0] if len(hits) == 1 else None

    def describe(self) -> str:
        """A short text of what the session holds, for prompts and `/handles`."""
        lines = []
        for handle, entry in self.state.files.items():
            lines.append(f"{handle}: {entry.kind} {Path(entry.path).name}")
        for handle, stored in self.state.results.items():
            lines.append(f"{handle}: result of {stored.tool}")
        return "\n".join(lines) or "nothing loaded yet"


def _looks_like_path(ref: str) -> bool:
    text = ref.strip()
    return "/" in text or "\\" in text or text.startswith("~") or bool(Path(text).suffix)


def _unknown(kind: str, ref: str, known: list[str], what_to_do: str) -> str:
    close = difflib.get_close_matches(ref.strip(), known, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    listing = ", ".join(known) if known else "none"
    return f"No {kind} '{ref}' in this session (known: {listing}).{hint} Otherwise {what_to_do}."


def _messages_to_dicts(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    if not messages:
        return []
    from langchain_core.messages import messages_to_dict

    return json.loads(json.dumps(messages_to_dict(messages), default=str))


def _messages_from_dicts(data: list[dict[str, Any]]) -> list[BaseMessage]:
    if not data:
        return []
    from langchain_core.messages import messages_from_dict

    return list(messages_from_dict(data))
