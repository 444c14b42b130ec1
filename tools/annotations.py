"""Object annotations of remote-sensing benchmarks, read into boxes and polygons: DOTA
oriented boxes (8-point `labelTxt`) and Pascal-VOC XML as DIOR and DIOR-RSVG write it
(axis-aligned `bndbox` or oriented `robndbox`, with an optional referring expression).
Used to evaluate detection and grounding, and to build training data."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from tools.errors import InputFileError


@dataclass(frozen=True)
class Annotation:
    """One labelled object in pixel coordinates (x right, y down)."""

    label: str
    polygon: tuple[tuple[float, float], ...]  # the object's corners, in the file's order
    difficult: bool = False
    description: str | None = None  # a referring expression (DIOR-RSVG)

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The axis-aligned box (x1, y1, x2, y2) around the polygon."""
        xs = [x for x, _ in self.polygon]
        ys = [y for _, y in self.polygon]
        return (min(xs), min(ys), max(xs), max(ys))


def read_dota(path: str | Path) -> list[Annotation]:
    """A DOTA v1 `labelTxt` file: `x1 y1 x2 y2 x3 y3 x4 y4 class difficulty` per line,
    after optional `imagesource:` and `gsd:` header lines."""
    path = Path(path)
    out: list[Annotation] = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts or ":" in parts[0]:
            continue
        if len(parts) < 9:
            raise InputFileError(f"{path.name} line {n}: expected 8 coordinates and a class.")
        try:
            coords = [float(v) for v in parts[:8]]
        except ValueError as exc:
            raise InputFileError(f"{path.name} line {n}: coordinates are not numbers.") from exc
        polygon = tuple(zip(coords[0::2], coords[1::2], strict=True))
        difficult = len(parts) > 9 and parts[9] == "1"
        out.append(Annotation(parts[8], polygon, difficult))
    return out


def read_voc(path: str | Path) -> list[Annotation]:
    """Objects of a Pascal-VOC XML (DIOR, DIOR-RSVG): `bndbox` or `robndbox` corners,
    the class `name` and a `description` when there is one."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise InputFileError(f"Cannot read {path.name} as VOC XML: {exc}") from exc
    out: list[Annotation] = []
    for obj in root.iter("object"):
        label = (obj.findtext("name") or "").strip()
        description = (obj.findtext("description") or "").strip() or None
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        box = obj.find("bndbox")
        rbox = obj.find("robndbox")
        if box is not None:
            x1, y1, x2, y2 = (
                float(box.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax")
            )
            polygon: tuple[tuple[float, float], ...] = ((x1, y1), (x2, y1), (x2, y2), (x1, y2))
        elif rbox is not None:
            keys = ("left_top", "right_top", "right_bottom", "left_bottom")
            polygon = tuple(
                (float(rbox.findtext(f"x_{k}") or "nan"), float(rbox.findtext(f"y_{k}") or "nan"))
                for k in keys
            )
        else:
            continue
        out.append(Annotation(label, polygon, difficult, description))
    return out
