"""Files a user drops into the chat: checked, copied into the session, loaded by handle.

Every check here runs before a byte is decoded, so a wrong, corrupt or enormous file ends
as one chat message that says what was wrong, never as a crashed turn. What passes is
copied into `<workspace>/uploads/` (Gradio's upload cache is shared by every browser, a
session's workspace is not) and loaded with `Session.load`, which opens the raster at once.
"""

from __future__ import annotations

import re
import shutil
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.session import handle_from_stem
from tools.errors import EOError, one_line

if TYPE_CHECKING:
    from agent.session import Session

# Gradio refuses bigger files itself (launch(max_file_size=...)); this check repeats the
# limit for files that reach us another way and names it in the chat.
DEFAULT_MAX_UPLOAD_MB = 200
RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
VECTOR_SUFFIXES = (".geojson", ".json")
UPLOAD_SUFFIXES = RASTER_SUFFIXES + VECTOR_SUFFIXES

# Magic numbers: what a file of each kind starts with, whatever its name says.
_MAGIC = {
    "tiff": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpeg": (b"\xff\xd8\xff",),
}
_KIND_OF_SUFFIX = {".tif": "tiff", ".tiff": "tiff", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
# "post=flood.tif" in the message names the handle of an attached file, as in `eoagent chat`.
_ASSIGNMENT = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]{0,39})\s*=\s*(\S+)")


class UploadError(Exception):
    """An attached file was refused; the message is shown to the user as it is."""


@dataclass
class LoadedUpload:
    handle: str
    name: str
    summary: str


def _sniff(head: bytes) -> str | None:
    for kind, prefixes in _MAGIC.items():
        if head.startswith(prefixes):
            return kind
    return None


def _png_size(head: bytes) -> tuple[int, int] | None:
    # IHDR is always the first chunk: width and height are big-endian at bytes 16-24.
    if len(head) >= 24 and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    return None


def _jpeg_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    with warnings.catch_warnings():
        # Pillow warns (and over twice its limit raises) on big images; we only read the
        # header here and compare with our own limit below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                return image.size
        except Image.DecompressionBombError:
            return None
        except OSError as exc:
            raise UploadError(
                f"{path.name} is not a readable JPEG ({one_line(str(exc))}); re-export it."
            ) from exc


def check_upload(path: Path, name: str, *, max_bytes: int, max_pixels: int) -> None:
    """Refuse a file that is too big, of a kind we do not read, not what its name says,
    or an untiled image that would unpack to more than `max_pixels`."""
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise UploadError(
            f"{name} was not loaded: '{suffix or 'no extension'}' files are not supported. "
            "Attach a GeoTIFF (.tif), PNG or JPEG image, or GeoJSON building footprints."
        )
    size = path.stat().st_size
    if size > max_bytes:
        raise UploadError(
            f"{name} was not loaded: it is {size / 2**20:.0f} MB, above the "
            f"{max_bytes / 2**20:.0f} MB upload limit. Crop or downsample it (gdal_translate "
            "-srcwin / -outsize), or load it from disk with `eoagent chat --image`."
        )
    if size == 0:
        raise UploadError(f"{name} was not loaded: the file is empty.")
    if suffix in VECTOR_SUFFIXES:
        return
    with path.open("rb") as handle:
        head = handle.read(32)
    kind, expected = _sniff(head), _KIND_OF_SUFFIX[suffix]
    if kind is None:
        raise UploadError(
            f"{name} was not loaded: it is not an image (its first bytes are not those of a "
            "TIFF, PNG or JPEG file). Attach a GeoTIFF, PNG or JPEG."
        )
    if kind != expected:
        raise UploadError(
            f"{name} was not loaded: its name says {expected.upper()} but its content is "
            f"{kind.upper()}. Rename it to the right extension and attach it again."
        )
    dims = _png_size(head) if kind == "png" else _jpeg_size(path) if kind == "jpeg" else None
    if kind == "jpeg" and dims is None:
        dims = (max_pixels, 2)  # Pillow itself called it a decompression bomb
    if dims and dims[0] * dims[1] > max_pixels:
        raise UploadError(
            f"{name} was not loaded: it is {dims[0]}x{dims[1]} px "
            f"({dims[0] * dims[1] / 1e6:.0f} Mpx), above the {max_pixels / 1e6:.0f} Mpx limit "
            "for PNG/JPEG (they cannot be read in tiles). Crop it, or convert it to a tiled "
            "GeoTIFF (gdal_translate -co TILED=YES)."
        )


def requested_handles(text: str) -> dict[str, str]:
    """File name (or stem) -> handle, from 'post=flood.tif' assignments in the message."""
    return {value.strip(",;").lower(): key for key, value in _ASSIGNMENT.findall(text or "")}


def _handle_for(name: str, requested: dict[str, str]) -> str:
    for key in (name.lower(), Path(name).stem.lower()):
        if key in requested:
            return requested[key]
    return handle_from_stem(Path(name).stem)


def _stage(path: Path, name: str, session: Session) -> Path:
    folder = session.workspace / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".") or "upload"
    dest, n = folder / safe, 2
    while dest.exists():
        dest, n = folder / f"{Path(safe).stem}_{n}{Path(safe).suffix}", n + 1
    shutil.copyfile(path, dest)
    return dest


def _summary(session: Session, handle: str) -> str:
    entry = session.state.files[handle]
    if entry.kind != "scene":
        return "building footprints (GeoJSON)"
    info = session.scene(handle).summary()
    parts = [
        str(info.get("sensor_title") or info.get("sensor") or "image"),
        f"{info.get('width')}x{info.get('height')} px",
        f"{len(list(info.get('bands') or []))} bands",  # type: ignore[call-overload]
        str(info.get("crs") or "no CRS"),
    ]
    if info.get("date"):
        parts.append(str(info["date"]))
    return ", ".join(parts)


def load_upload(
    session: Session,
    path: str | Path,
    name: str,
    *,
    text: str = "",
    max_bytes: int,
    max_pixels: int,
) -> LoadedUpload:
    """Check, copy and load one attached file; raises UploadError with the user's message."""
    path = Path(path)
    check_upload(path, name, max_bytes=max_bytes, max_pixels=max_pixels)
    staged = _stage(path, name, session)
    try:
        handle = session.load(staged, _handle_for(name, requested_handles(text)))
        summary = _summary(session, handle)
    except EOError as exc:
        staged.unlink(missing_ok=True)
        raise UploadError(f"{name} was not loaded: {one_line(str(exc))}") from exc
    except Exception as exc:  # GDAL and Pillow raise many kinds on a corrupt file
        staged.unlink(missing_ok=True)
        session.state.files = {
            h: f for h, f in session.state.files.items() if f.path != str(staged)
        }
        raise UploadError(
            f"{name} was not loaded: it could not be read as a raster "
            f"({type(exc).__name__}: {one_line(str(exc))[:200]}). Check that the file is "
            "complete, or re-export it."
        ) from exc
    return LoadedUpload(handle=handle, name=name, summary=summary)
