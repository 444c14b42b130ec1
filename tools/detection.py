"""Open-vocabulary object detection (`detect_objects`) and referring-expression grounding
(`ground`) with OWLv2 / OWL-ViT or Grounding DINO through transformers.

A scene larger than a tile is cut into overlapping tiles; each tile goes through the
model on its own, its boxes are shifted onto the scene, and the boxes of all tiles are
merged: class-wise non-maximum suppression (torchvision's batched NMS), then a box cut by
an inner tile edge is dropped when a larger box of its class, from a tile that saw the
object whole, covers most of it. An overlap wider than the objects sought guarantees such
a tile exists.

Boxes come back in pixel coordinates (x to the right, y down, from the top-left corner of
the scene), in the scene's map coordinates, and in lon/lat (EPSG:4326) when the scene has
a CRS; they are written as GeoJSON polygons (lon/lat, or pixel/map coordinates for an
image without CRS).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from pyproj import Geod, Transformer
from rasterio.windows import Window

from agent.brains.boxes import PixelBox
from tools import export
from tools.errors import ArgumentError, EmptyResultError
from tools.raster import Grid, Scene
from tools.vision_models import (
    VisionModel,
    check_rgb_scene,
    configured,
    display_stretch,
    load,
    read_rgb,
    weights_missing,
)

_GEOD = Geod(ellps="WGS84")
DEFAULT_TILE = 1024
DEFAULT_OVERLAP = 128
# A box within this many pixels of an inner tile edge may be a cut-off part of an object.
EDGE_PX = 2.0
# Boxes thinner than this after clipping to their tile are noise (or lie off the tile).
MIN_BOX_PX = 1.0
PALETTE = ((255, 60, 60), (60, 200, 255), (255, 210, 0), (120, 255, 120), (255, 120, 255))
OBJECTS_HINT = (
    "Without weights, objects in a mapped result serve: call detect_objects with "
    "result=<handle of a water, flood, burn, change or damage result> (e.g. 'flood_1')."
)


# -- boxes and merging ------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    """A box in scene pixels (corners, y down), its score and label; `cut` when it
    touches an inner tile edge and may show part of an object."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    label: str
    cut: bool = False

    @property
    def area(self) -> float:
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)

    def overlap(self, other: Detection) -> float:
        w = min(self.x2, other.x2) - max(self.x1, other.x1)
        h = min(self.y2, other.y2) - max(self.y1, other.y1)
        return max(0.0, w) * max(0.0, h)


def plan_tiles(width: int, height: int, tile_size: int, overlap: int) -> list[Window]:
    """Windows of at most `tile_size` px covering the scene, neighbours sharing at
    least `overlap` px; the last row and column are flush with the scene's edge."""
    if tile_size < 32:
        raise ArgumentError(f"tile_size {tile_size} is too small; use 256 px or more.")
    if not 0 <= overlap < tile_size:
        raise ArgumentError(
            f"overlap {overlap} must be at least 0 and below tile_size {tile_size}; "
            "use about a tenth of the tile."
        )

    def starts(n: int) -> list[int]:
        if n <= tile_size:
            return [0]
        step = tile_size - overlap
        return [*range(0, n - tile_size, step), n - tile_size]

    return [
        Window(col, row, min(tile_size, width), min(tile_size, height))
        for row, col in itertools.product(starts(height), starts(width))
    ]


def inner_edges(window: Window, width: int, height: int) -> tuple[bool, bool, bool, bool]:
    """(left, top, right, bottom): which sides of a tile lie inside the scene."""
    c, r, w, h = int(window.col_off), int(window.row_off), int(window.width), int(window.height)
    return (c > 0, r > 0, c + w < width, r + h < height)


def to_scene(
    boxes: Sequence[tuple[float, float, float, float, float, str]],
    window: Window,
    width: int,
    height: int,
) -> list[Detection]:
    """Tile boxes (x1, y1, x2, y2, score, label in tile pixels) on the scene, clipped,
    marked `cut` when they touch an inner edge of the tile."""
    c, r = float(window.col_off), float(window.row_off)
    w, h = float(window.width), float(window.height)
    left, top, right, bottom = inner_edges(window, width, height)
    out = []
    for x1, y1, x2, y2, score, label in boxes:
        x1, x2 = sorted((min(max(x1, 0.0), w), min(max(x2, 0.0), w)))
        y1, y2 = sorted((min(max(y1, 0.0), h), min(max(y2, 0.0), h)))
        if x2 - x1 < MIN_BOX_PX or y2 - y1 < MIN_BOX_PX:
            continue
        cut = (
            (left and x1 <= EDGE_PX)
            or (top and y1 <= EDGE_PX)
            or (right and x2 >= w - EDGE_PX)
            or (bottom and y2 >= h - EDGE_PX)
        )
        out.append(Detection(x1 + c, y1 + r, x2 + c, y2 + r, float(score), label, bool(cut)))
    return out


def merge_detections(
    detections: Sequence[Detection], iou_threshold: float = 0.5, cover_threshold: float = 0.7
) -> list[Detection]:
    """Class-wise NMS over all tiles, then drop cut boxes covered (intersection over
    their own area >= `cover_threshold`) by a larger box of the same class. Sorted by
    descending score."""
    if not detections:
        return []
    import torch
    from torchvision.ops import batched_nms

    labels = sorted({d.label for d in detections})
    boxes = torch.tensor([[d.x1, d.y1, d.x2, d.y2] for d in detections], dtype=torch.float64)
    # On equal scores a whole box wins over a copy cut by a tile edge.
    scores = torch.tensor([d.score - 1e-9 * d.cut for d in detections], dtype=torch.float64)
    idxs = torch.tensor([labels.index(d.label) for d in detections])
    keep = batched_nms(boxes, scores, idxs, iou_threshold).tolist()
    kept = [detections[i] for i in keep]
    merged = [
        d
        for d in kept
        if not d.cut
        or not any(
            o is not d
            and o.label == d.label
            and o.area > d.area
            and d.overlap(o) >= cover_threshold * d.area
            for o in kept
        )
    ]
    return sorted(merged, key=lambda d: -d.score)


# -- coordinates and export -------------------------------------------------------------


class DetectedBox(BaseModel):
    """One box, in pixels and on the ground."""

    label: str
    score: float = Field(description="model confidence 0-1")
    pixel_box: list[float] = Field(description="[x1, y1, x2, y2] in pixels from the top-left")
    map_box: list[float] = Field(
        description="[min x, min y, max x, max y] in the scene's CRS (pixels without CRS)"
    )
    lonlat_box: list[float] | None = Field(
        default=None, description="[west, south, east, north] in degrees; None without CRS"
    )
    center_lonlat: list[float] | None = Field(default=None, description="[lon, lat] of the centre")
    area_ha: float | None = Field(default=None, description="ground area; None without CRS")


class GeoBoxes:
    """Converts scene-pixel boxes to map and lon/lat coordinates for one grid."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.to_lonlat = (
            Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True) if grid.crs else None
        )

    def record(self, d: Detection) -> DetectedBox:
        box = PixelBox(d.x1, d.y1, d.x2, d.y2, label=d.label)
        map_box = box.to_map(self.grid.transform)
        rec = DetectedBox(
            label=d.label,
            score=round(d.score, 4),
            pixel_box=[round(v, 2) for v in (d.x1, d.y1, d.x2, d.y2)],
            map_box=list(map_box.bounds),
        )
        if self.to_lonlat is not None:
            lon, lat = self.lonlat_ring(map_box.corners)
            rec.lonlat_box = [min(lon), min(lat), max(lon), max(lat)]
            cx, cy = box.to_map(self.grid.transform).polygon().centroid.coords[0]
            clon, clat = self.to_lonlat.transform(cx, cy)
            rec.center_lonlat = [float(clon), float(clat)]
            rec.area_ha = round(abs(_GEOD.polygon_area_perimeter(lon, lat)[0]) / 1e4, 6)
        return rec

    def lonlat_ring(
        self, corners: Sequence[tuple[float, float]]
    ) -> tuple[list[float], list[float]]:
        assert self.to_lonlat is not None
        xs, ys = zip(*corners, strict=True)
        lon, lat = self.to_lonlat.transform(np.array(xs), np.array(ys))
        return [float(v) for v in lon], [float(v) for v in lat]

    def feature(self, d: Detection, rec: DetectedBox) -> dict[str, Any]:
        corners = PixelBox(d.x1, d.y1, d.x2, d.y2).to_map(self.grid.transform).corners
        if self.to_lonlat is not None:
            lon, lat = self.lonlat_ring(corners)
            ring = [[x, y] for x, y in zip(lon, lat, strict=True)]
        else:
            ring = [[float(x), float(y)] for x, y in corners]
        ring.append(ring[0])
        props = rec.model_dump(exclude={"map_box"})
        return {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": props,
        }


def write_boxes(
    dest: str | Path,
    geo: GeoBoxes,
    detections: Sequence[Detection],
    records: Sequence[DetectedBox],
    properties: dict[str, Any],
) -> Path:
    features = [geo.feature(d, r) for d, r in zip(detections, records, strict=True)]
    props = dict(properties)
    props["coordinates"] = (
        "EPSG:4326 lon/lat" if geo.to_lonlat else "scene pixels/map units (no CRS)"
    )
    return export.write_geojson(dest, features, props)


def write_box_quicklook(dest: str | Path, scene: Scene, detections: Sequence[Detection]) -> Path:
    view = export.preview_grid(scene.grid, 1024)
    background = export.scene_rgb(scene, view)
    rows, cols = background.shape[:2]
    sy, sx = rows / scene.grid.height, cols / scene.grid.width
    labels = list(dict.fromkeys(d.label for d in detections))
    outlines = []
    for i, label in enumerate(labels):
        lines = np.zeros((rows, cols), dtype=bool)
        for d in detections:
            if d.label != label:
                continue
            c1, c2 = int(d.x1 * sx), min(cols - 1, int(d.x2 * sx))
            r1, r2 = int(d.y1 * sy), min(rows - 1, int(d.y2 * sy))
            lines[r1 : r2 + 1, [c1, c2]] = True
            lines[[r1, r2], c1 : c2 + 1] = True
        outlines.append((lines, PALETTE[i % len(PALETTE)]))
    return export.write_quicklook(dest, background, outlines=outlines)


# -- running the models -----------------------------------------------------------------


def run_tile(
    vm: VisionModel, image: np.ndarray, queries: Sequence[str]
) -> list[tuple[float, float, float, float, float, str]]:
    """Every box the model proposes on one RGB tile: (x1, y1, x2, y2, score, query) in
    tile pixels, each with the best-scoring query."""
    import torch

    h, w = image.shape[:2]
    with torch.inference_mode():
        if vm.is_grounding_dino:
            probs, boxes = _grounding_dino(vm, image, queries)
            scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        else:
            text_cfg = vm.model.config.text_config
            inputs = vm.processor(
                text=[list(queries)],
                images=[image],
                return_tensors="pt",
                padding="max_length",
                max_length=text_cfg.max_position_embeddings,
                truncation=True,
            ).to(vm.device)
            out = vm.model(**inputs)
            probs = torch.sigmoid(out.logits[0].float())  # (boxes, queries)
            boxes = out.pred_boxes[0].float()
            # OWLv2 pads the tile to a square (bottom/right) before resizing; OWL-ViT
            # stretches it: boxes are fractions of the padded square, or of the tile.
            side = max(h, w)
            scale = torch.tensor(
                [side] * 4 if vm.kind == "owlv2" else [w, h, w, h], dtype=torch.float32
            )
    scores, best = probs.max(dim=-1)
    cx, cy, bw, bh = (boxes.cpu() * scale).unbind(-1)
    xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1)
    return [
        (*(float(v) for v in xyxy[i]), float(scores[i]), queries[int(best[i])])  # type: ignore[misc]
        for i in range(xyxy.shape[0])
    ]


def _grounding_dino(vm: VisionModel, image: np.ndarray, queries: Sequence[str]) -> Any:
    """Per-box probability of each query (max over the query's tokens) and the boxes."""
    import torch

    # Grounding DINO reads classes as one lower-case prompt, phrases ended by ". ".
    phrases = [q.strip().lower().rstrip(".") for q in queries]
    prompt = "".join(f"{p}. " for p in phrases).strip()
    inputs = vm.processor(images=[image], text=prompt, return_tensors="pt").to(vm.device)
    out = vm.model(**inputs)
    token_probs = torch.sigmoid(out.logits[0].float()).cpu()  # (boxes, text tokens)
    offsets = vm.processor.tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
    columns = []
    start = 0
    for phrase in phrases:
        begin = prompt.index(phrase, start)
        end = start = begin + len(phrase)
        tokens = [i for i, (a, b) in enumerate(offsets) if b > a and a >= begin and b <= end]
        tokens = [i for i in tokens if i < token_probs.shape[1]]
        columns.append(
            token_probs[:, tokens].max(dim=-1).values
            if tokens
            else torch.zeros(token_probs.shape[0])
        )
    return torch.stack(columns, dim=-1), out.pred_boxes[0].float()


def _detect(
    scene: Scene,
    queries: Sequence[str],
    vm: VisionModel,
    score_threshold: float,
    tile_size: int,
    overlap: int,
    iou_threshold: float,
) -> tuple[list[Detection], int]:
    grid = scene.grid
    stretch = display_stretch(scene)
    tiles = plan_tiles(grid.width, grid.height, tile_size, overlap)
    found: list[Detection] = []
    for window in tiles:
        image = read_rgb(scene, window, stretch)
        boxes = [b for b in run_tile(vm, image, queries) if b[4] >= score_threshold]
        found += to_scene(boxes, window, grid.width, grid.height)
    return merge_detections(found, iou_threshold), len(tiles)


# -- the tools --------------------------------------------------------------------------


class DetectionResult(BaseModel):
    """Boxes of the named classes found in a scene."""

    method: str = Field(description="model kind (owlv2, grounding-dino) or 'masks'")
    model: str
    classes: list[str]
    count: int = Field(description="boxes found, all classes")
    counts: dict[str, int] = Field(description="boxes per class")
    boxes: list[DetectedBox] = Field(description="the highest-scoring boxes (all in output)")
    tiles: int = Field(description="tiles the scene was cut into")
    score_threshold: float
    crs: str | None
    output: str | None = Field(default=None, description="GeoJSON of all boxes")
    quicklook: str | None = None
    notes: list[str] = Field(default_factory=list)


class GroundResult(BaseModel):
    """The box a referring expression points at."""

    expression: str
    method: str
    model: str
    box: DetectedBox = Field(description="the best box for the expression")
    confident: bool = Field(description="score at or above the threshold")
    alternatives: list[DetectedBox] = Field(default_factory=list, description="next best boxes")
    crs: str | None
    output: str | None = None
    quicklook: str | None = None
    notes: list[str] = Field(default_factory=list)


def _model(
    model: str | Path | VisionModel | None,
    settings: Sequence[str],
    tool: str,
    role: Any,
    hint: str = "",
) -> VisionModel:
    if isinstance(model, VisionModel):
        return model
    source = model or next((v for s in settings if (v := configured(s))), None)
    if source is None:
        raise weights_missing(settings[0], tool, hint)
    return load(source, role)


def _paths(out: str | Path | None) -> tuple[Path, Path] | None:
    if out is None:
        return None
    path = Path(out)
    if path.suffix.lower() != ".geojson":
        raise ArgumentError(f"Output {path} must end in .geojson; the PNG is written beside it.")
    return path, path.with_suffix(".png")


def _clean_queries(classes: Sequence[str] | str) -> list[str]:
    if isinstance(classes, str):
        classes = [c for c in classes.split(",")]
    queries = list(dict.fromkeys(c.strip() for c in classes if c and c.strip()))
    if not queries:
        raise ArgumentError("Name at least one class to look for, e.g. ['ship', 'storage tank'].")
    if len(queries) > 16:
        raise ArgumentError(
            f"{len(queries)} classes is too many for one call; ask for 16 or fewer."
        )
    return queries


def detect_objects(
    scene: Scene,
    classes: Sequence[str] | str,
    *,
    score_threshold: float = 0.2,
    tile_size: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    iou_threshold: float = 0.5,
    max_listed: int = 20,
    model: str | Path | VisionModel | None = None,
    out: str | Path | None = None,
) -> DetectionResult:
    """Boxes of `classes` (free text) in `scene` with an open-vocabulary detector:
    `model` (a folder, hub id or loaded model), else settings.detector_model.
    `out` (.geojson) gets every box as a polygon and a PNG quicklook beside it."""
    queries = _clean_queries(classes)
    check_rgb_scene(scene, "detect_objects")
    vm = _model(model, ["detector_model"], "detect_objects", "detector", OBJECTS_HINT)
    merged, n_tiles = _detect(
        scene, queries, vm, score_threshold, tile_size, overlap, iou_threshold
    )
    geo = GeoBoxes(scene.grid)
    records = [geo.record(d) for d in merged]
    counts = {q: sum(d.label == q for d in merged) for q in queries}
    result = DetectionResult(
        method=vm.kind,
        model=vm.source,
        classes=queries,
        count=len(merged),
        counts=counts,
        boxes=records[:max_listed],
        tiles=n_tiles,
        score_threshold=score_threshold,
        crs=scene.grid.crs.to_string() if scene.grid.crs else None,
    )
    if len(merged) > max_listed:
        result.notes.append(
            f"{len(merged)} boxes; the {max_listed} best are listed here, all are in the GeoJSON."
        )
    if n_tiles > 1:
        result.notes.append(
            f"Scene cut into {n_tiles} tiles of {tile_size} px "
            f"(overlap {overlap} px); boxes merged by class-wise NMS."
        )
    if scene.grid.crs is None:
        result.notes.append("The scene has no CRS: boxes are in pixels, areas unknown.")
    if (paths := _paths(out)) is not None:
        props = {
            "tool": "detect_objects",
            "model": vm.source,
            "classes": queries,
            "score_threshold": score_threshold,
        }
        write_boxes(paths[0], geo, merged, records, props)
        write_box_quicklook(paths[1], scene, merged)
        result.output, result.quicklook = str(paths[0]), str(paths[1])
    return result


def ground(
    scene: Scene,
    expression: str,
    *,
    score_threshold: float = 0.2,
    tile_size: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    alternatives: int = 3,
    model: str | Path | VisionModel | None = None,
    out: str | Path | None = None,
) -> GroundResult:
    """The box that best matches a referring expression ("the golf course in the
    north"): the top box of a grounding model (settings.grounding_model, else
    settings.detector_model, with the expression as the text query)."""
    expression = " ".join(str(expression).split())
    if not expression:
        raise ArgumentError("Give an expression to ground, e.g. 'the golf course'.")
    check_rgb_scene(scene, "ground")
    vm = _model(model, ["grounding_model", "detector_model"], "ground", "grounding")
    merged, _ = _detect(scene, [expression], vm, 0.0, tile_size, overlap, 0.5)
    if not merged:
        raise EmptyResultError(f"The model proposed no box for '{expression}' on this scene.")
    geo = GeoBoxes(scene.grid)
    best = merged[0]
    record = geo.record(best)
    result = GroundResult(
        expression=expression,
        method=vm.kind,
        model=vm.source,
        box=record,
        confident=best.score >= score_threshold,
        alternatives=[geo.record(d) for d in merged[1 : 1 + alternatives]],
        crs=scene.grid.crs.to_string() if scene.grid.crs else None,
    )
    if not result.confident:
        result.notes.append(
            f"Best score {best.score:.2f} is below {score_threshold}: the "
            "object may not be in the scene; say so rather than trust the box."
        )
    if (paths := _paths(out)) is not None:
        props = {"tool": "ground", "model": vm.source, "expression": expression}
        write_boxes(paths[0], geo, [best], [record], props)
        write_box_quicklook(paths[1], scene, [replace(best, label=expression)])
        result.output, result.quicklook = str(paths[0]), str(paths[1])
    return result
