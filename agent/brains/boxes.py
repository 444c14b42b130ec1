"""Boxes in what vision-language models write, as pixel and map coordinates.

Three spellings are read, in this order of trust (the first one found in a text wins,
so that a stray list of numbers next to a GeoChat box is not taken for a second box):

- GeoChat: ``{<x1><y1><x2><y2>|<angle>}``, corners on a 0-100 scale of the image's width
  and height, the angle in degrees (the ``|<angle>`` part may be missing: angle 0).
- Qwen2-VL: ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>`` on a 0-1000 scale (the special
  tokens may have been stripped: a bare ``(x1,y1),(x2,y2)`` is read too).
- A plain list ``[x1, y1, x2, y2]`` as LLaVA-style models write it: 0-1 fractions, a
  0-100 scale, or pixels, told apart by the largest value unless `scale` says which.

Corner values are normalised to the image, so a box read off a downsampled preview maps
onto the full raster: pass the raster's width and height (not the preview's) and its
transform. The parser never raises; what it cannot read it leaves out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

Scale = Literal["auto", "unit", "percent", "permille", "pixels"]

_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
_GEOCHAT = re.compile(
    r"\{\s*<" + _NUM + r">\s*<" + _NUM + r">\s*<" + _NUM + r">\s*<" + _NUM + r">"
    r"\s*(?:\|\s*<" + _NUM + r">\s*)?\}"
)
_QWEN = re.compile(r"\(" + _NUM + "," + _NUM + r"\)\s*,?\s*\(" + _NUM + "," + _NUM + r"\)")
_LIST = re.compile(r"\[" + _NUM + "," + _NUM + "," + _NUM + "," + _NUM + r"\]")
_MAX_TEXT = 100_000  # longer completions are cut: a box list is never that long
_SCALE_VALUE = {"unit": 1.0, "percent": 100.0, "permille": 1000.0}


@dataclass(frozen=True)
class PixelBox:
    """A box on an image: pixel coordinates with x to the right and y down, measured
    from the image's top-left corner (the corner, not the first pixel's centre), so that
    ``x2 - x1`` is a width in pixels. ``angle`` is the model's rotation in degrees
    about the box centre (0 for an axis-aligned box)."""

    x1: float
    y1: float
    x2: float
    y2: float
    angle: float = 0.0
    label: str | None = None

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2)

    def corners(self) -> list[tuple[float, float]]:
        """Top-left, top-right, bottom-right, bottom-left, turned by `angle` about the
        centre. In pixel space (y down) a positive angle turns clockwise on screen."""
        cx, cy = self.center
        pts = [(self.x1, self.y1), (self.x2, self.y1), (self.x2, self.y2), (self.x1, self.y2)]
        if self.angle == 0:
            return pts
        t = math.radians(self.angle)
        cos, sin = math.cos(t), math.sin(t)
        return [
            (cx + (x - cx) * cos - (y - cy) * sin, cy + (x - cx) * sin + (y - cy) * cos)
            for x, y in pts
        ]

    def to_map(self, transform: Any) -> MapBox:
        """The box in the map coordinates of a raster's affine transform (a rasterio
        ``Affine`` or any object with its a-f coefficients, or a 6-tuple)."""
        corners = [_apply(transform, x, y) for x, y in self.corners()]
        return MapBox(corners=tuple(corners), angle=self.angle, label=self.label)


@dataclass(frozen=True)
class MapBox:
    """A box in a raster's CRS: its four corners (same order as `PixelBox.corners`)."""

    corners: tuple[tuple[float, float], ...]
    angle: float = 0.0
    label: str | None = None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(min x, min y, max x, max y) in map units."""
        xs = [x for x, _ in self.corners]
        ys = [y for _, y in self.corners]
        return (min(xs), min(ys), max(xs), max(ys))

    def polygon(self) -> Any:
        """The box as a shapely Polygon (for zonal statistics and GeoJSON export)."""
        from shapely.geometry import Polygon

        return Polygon(self.corners)


def parse_boxes(text: Any, width: int, height: int, *, scale: Scale = "auto") -> list[PixelBox]:
    """Every box in `text`, in pixel coordinates of a `width` x `height` image.
    `scale` applies to plain lists only (GeoChat is always 0-100, Qwen2-VL 0-1000).
    Never raises: junk gives an empty list."""
    try:
        return _parse(str(text)[:_MAX_TEXT], float(width), float(height), scale)
    except Exception:  # the tools that call this must get boxes or none, never a traceback
        return []


def format_geochat_box(box: PixelBox, width: int, height: int) -> str:
    """The GeoChat spelling of `box` (integer 0-100 corners), for prompts and training
    data; `parse_boxes` reads it back to the same box up to that rounding."""
    x1, x2 = (round(v * 100 / width) for v in (box.x1, box.x2))
    y1, y2 = (round(v * 100 / height) for v in (box.y1, box.y2))
    return f"{{<{x1}><{y1}><{x2}><{y2}>|<{round(box.angle)}>}}"


def _parse(text: str, width: float, height: float, scale: Scale) -> list[PixelBox]:
    if not (width > 0 and height > 0 and math.isfinite(width) and math.isfinite(height)):
        return []
    found: list[PixelBox] = []
    for m in _GEOCHAT.finditer(text):
        values = [float(v) for v in m.groups()[:4]]
        angle = float(m.group(5)) if m.group(5) is not None else 0.0
        found += _box(values, 100.0, width, height, angle)
    if found:
        return found
    for m in _QWEN.finditer(text):
        found += _box([float(v) for v in m.groups()], 1000.0, width, height, 0.0)
    if found:
        return found
    for m in _LIST.finditer(text):
        values = [float(v) for v in m.groups()]
        found += _box(values, _list_scale(values, scale, width, height), width, height, 0.0)
    return found


def _list_scale(values: list[float], scale: Scale, width: float, height: float) -> float:
    """The full-image value of a plain list's scale; 0 means pixels."""
    if scale == "pixels":
        return 0.0
    if scale != "auto":
        return _SCALE_VALUE[scale]
    top = max(values)
    if top <= 1.0:
        return 1.0
    if top <= 100.0:
        return 100.0
    if max(values[0], values[2]) <= width and max(values[1], values[3]) <= height:
        return 0.0
    return 1000.0


def _box(
    values: list[float], full: float, width: float, height: float, angle: float
) -> list[PixelBox]:
    """One clamped, ordered box (as a list: empty when degenerate or not finite)."""
    if not all(math.isfinite(v) for v in [*values, angle]):
        return []
    x1, y1, x2, y2 = values
    if full > 0:
        x1, x2 = x1 * width / full, x2 * width / full
        y1, y2 = y1 * height / full, y2 * height / full
    x1, x2 = sorted((min(max(x1, 0.0), width), min(max(x2, 0.0), width)))
    y1, y2 = sorted((min(max(y1, 0.0), height), min(max(y2, 0.0), height)))
    if x2 <= x1 or y2 <= y1:
        return []
    return [PixelBox(x1, y1, x2, y2, angle=angle)]


def _apply(transform: Any, x: float, y: float) -> tuple[float, float]:
    # The coefficients are applied by hand: rasterio's `Affine * tuple` is deprecated in
    # affine 2.4+, and `@` is missing from older releases.
    if isinstance(transform, (tuple, list)):
        a, b, c, d, e, f = (float(v) for v in transform[:6])
    else:
        a, b, c, d, e, f = (float(getattr(transform, k)) for k in "abcdef")
    return (a * x + b * y + c, d * x + e * y + f)
