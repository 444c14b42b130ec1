"""Promptable segmentation (`segment`) with SAM through transformers.

The prompt is a point, a box, or the box of an earlier `ground` result, in scene pixels
(or lon/lat, or map coordinates). SAM sees a crop around the prompt, not the whole scene:
its encoder resizes every input to 1024 px, so a crop keeps the object's detail however
large the scene. The mask is written on the scene's grid (a class GeoTIFF, 1 = object),
traced into GeoJSON polygons, and measured in hectares from the grid's pixel areas.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field
from pyproj import Transformer
from rasterio.windows import Window

from tools import export
from tools.errors import ArgumentError
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

Coords = Literal["pixel", "lonlat", "map"]
Prompt = Literal["point", "box", "ground"]
OBJECT = 1
OBJECT_COLOUR = (255, 200, 0)
DEFAULT_CROP = 1024
SEGMENT_HINT = (
    "Without SAM, masks come from the offline tools: water_mask, flood_map, land_cover, "
    "burn_severity or change_detection."
)


class SegmentResult(BaseModel):
    """A mask for one prompt, on the scene's grid."""

    prompt: Prompt
    prompt_pixels: list[float] = Field(description="the prompt in scene pixels: [x, y] or box")
    model: str
    pixels: int = Field(description="pixels in the mask")
    area_ha: float | None = Field(description="ground area of the mask; None without CRS")
    score: float = Field(description="SAM's predicted IoU of the chosen mask, 0-1")
    mask_box: list[int] | None = Field(description="[x1, y1, x2, y2] pixel bounds of the mask")
    polygons: int
    crs: str | None
    output: str | None = Field(default=None, description="mask GeoTIFF, 1 = object, 0 = not")
    geojson: str | None = None
    quicklook: str | None = None
    notes: list[str] = Field(default_factory=list)


def to_pixels(grid: Grid, xs: Sequence[float], ys: Sequence[float], coords: Coords) -> np.ndarray:
    """Scene pixel positions (x right, y down, from the top-left corner) of points
    given in pixels, lon/lat or the scene's map coordinates."""
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if coords == "lonlat":
        if grid.crs is None:
            raise ArgumentError(
                "The scene has no CRS, so lon/lat cannot be placed on it; give pixel coordinates."
            )
        x, y = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform(x, y)
    if coords in ("lonlat", "map"):
        inv = ~grid.transform
        x, y = inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f
    return np.column_stack([x, y])


def _prompt(
    grid: Grid,
    point: Sequence[float] | None,
    box: Sequence[float] | None,
    ground_result: Any,
    coords: Coords,
) -> tuple[Prompt, np.ndarray | None, np.ndarray | None]:
    given = sum(v is not None for v in (point, box, ground_result))
    if given != 1:
        raise ArgumentError(
            "Give exactly one prompt: a point [x, y], a box [x1, y1, x2, y2] or a ground result."
        )
    if ground_result is not None:
        data = ground_result.model_dump() if isinstance(ground_result, BaseModel) else ground_result
        try:
            pixel_box = [float(v) for v in data["box"]["pixel_box"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ArgumentError(
                "That result has no box; give the handle of a ground result (e.g. 'ground_1')."
            ) from exc
        return "ground", None, np.asarray(pixel_box)
    if point is not None:
        if len(point) != 2:
            raise ArgumentError(f"A point is [x, y]; got {len(point)} numbers.")
        xy = to_pixels(grid, [point[0]], [point[1]], coords)[0]
        if not (0 <= xy[0] < grid.width and 0 <= xy[1] < grid.height):
            raise ArgumentError(
                f"Point {list(point)} ({coords}) falls outside the scene ({grid.width}x"
                f"{grid.height} px); give a point inside it."
            )
        return "point", xy, None
    assert box is not None
    if len(box) != 4:
        raise ArgumentError(f"A box is [x1, y1, x2, y2]; got {len(box)} numbers.")
    corners = to_pixels(grid, [box[0], box[2]], [box[1], box[3]], coords)
    x1, x2 = sorted(np.clip(corners[:, 0], 0, grid.width))
    y1, y2 = sorted(np.clip(corners[:, 1], 0, grid.height))
    if x2 - x1 < 1 or y2 - y1 < 1:
        raise ArgumentError(
            f"Box {list(box)} ({coords}) does not overlap the scene, or is "
            "under a pixel; give a box inside it."
        )
    return "box", None, np.array([x1, y1, x2, y2])


def crop_window(
    grid: Grid, point: np.ndarray | None, box: np.ndarray | None, crop_size: int, margin: float
) -> Window:
    """The part of the scene SAM sees: the box and a margin around it, or a square of
    `crop_size` px centred on the point; clipped to the scene."""
    if box is not None:
        pad = max(16.0, margin * max(box[2] - box[0], box[3] - box[1]))
        x1, y1, x2, y2 = box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad
    else:
        assert point is not None
        half = crop_size / 2
        x1, y1, x2, y2 = point[0] - half, point[1] - half, point[0] + half, point[1] + half
    c1, r1 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
    c2, r2 = min(grid.width, int(np.ceil(x2))), min(grid.height, int(np.ceil(y2)))
    return Window(c1, r1, c2 - c1, r2 - r1)


def run_sam(
    vm: VisionModel, image: np.ndarray, point: np.ndarray | None, box: np.ndarray | None
) -> tuple[np.ndarray, float]:
    """SAM's best mask (of its three proposals) on a crop, and its predicted IoU."""
    import torch

    kwargs: dict[str, Any] = {}
    if box is not None:
        kwargs["input_boxes"] = [[[float(v) for v in box]]]
    else:
        assert point is not None
        kwargs["input_points"] = [[[[float(point[0]), float(point[1])]]]]
        kwargs["input_labels"] = [[[1]]]
    inputs = vm.processor(images=[image], return_tensors="pt", **kwargs).to(vm.device)
    with torch.inference_mode():
        out = vm.model(**inputs, multimask_output=True)
    masks = vm.processor.image_processor.post_process_masks(
        out.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
    )[0][0]  # (proposals, rows, cols) for the one prompt
    scores = out.iou_scores[0, 0].float().cpu()
    best = int(scores.argmax())
    return masks[best].numpy().astype(bool), float(scores[best])


def segment(
    scene: Scene,
    *,
    point: Sequence[float] | None = None,
    box: Sequence[float] | None = None,
    ground_result: BaseModel | Mapping[str, Any] | None = None,
    coords: Coords = "pixel",
    crop_size: int = DEFAULT_CROP,
    margin: float = 0.25,
    model: str | Path | VisionModel | None = None,
    out: str | Path | None = None,
) -> SegmentResult:
    """Mask of the object at a point, in a box, or in a `ground` result's box, with SAM
    (`model`, else settings.sam_model). `out` (.tif) also gets `<stem>.geojson` polygons
    and a `<stem>.png` quicklook beside it."""
    paths = export.result_paths(out)
    grid = scene.grid
    kind, point_px, box_px = _prompt(grid, point, box, ground_result, coords)
    check_rgb_scene(scene, "segment")
    if isinstance(model, VisionModel):
        vm = model
    else:
        source = model or configured("sam_model")
        if source is None:
            raise weights_missing("sam_model", "segment", SEGMENT_HINT)
        vm = load(source, "sam")
    window = crop_window(grid, point_px, box_px, crop_size, margin)
    offset = np.array([window.col_off, window.row_off], dtype=np.float64)
    image = read_rgb(scene, window, display_stretch(scene))
    local_point = None if point_px is None else point_px - offset
    local_box = None if box_px is None else box_px - np.tile(offset, 2)
    mask, score = run_sam(vm, image, local_point, local_box)
    crop_grid = Grid(grid.crs, grid.window_transform(window), int(window.width), int(window.height))
    pixels = int(mask.sum())
    area = grid.area_m2(mask, window)
    rows, cols = np.nonzero(mask)
    mask_box = (
        [
            int(cols.min() + window.col_off),
            int(rows.min() + window.row_off),
            int(cols.max() + 1 + window.col_off),
            int(rows.max() + 1 + window.row_off),
        ]
        if pixels
        else None
    )
    prompt_px = point_px if point_px is not None else box_px
    assert prompt_px is not None
    result = SegmentResult(
        prompt=kind,
        prompt_pixels=[round(float(v), 2) for v in prompt_px],
        model=vm.source,
        pixels=pixels,
        area_ha=None if area is None else round(area / 1e4, 4),
        score=round(score, 4),
        mask_box=mask_box,
        polygons=0,
        crs=grid.crs.to_string() if grid.crs else None,
    )
    if not pixels:
        result.notes.append("SAM returned an empty mask: try a box around the object.")
    if grid.crs is None:
        result.notes.append("The scene has no CRS: the area is unknown, polygons are in pixels.")
    features = export.mask_to_features(mask, crop_grid, labels={OBJECT: "object"})
    result.polygons = len(features)
    if paths is not None:
        raster, geojson, png = paths
        export.write_raster(
            raster,
            grid,
            _mask_blocks(grid, mask, window),
            dtype="uint8",
            tags={"eoagent_product": "segment"},
        )
        export.write_geojson(
            geojson, features, {"tool": "segment", "prompt": kind, "model": vm.source}
        )
        view = export.preview_grid(grid, 1024)
        full = np.zeros(grid.shape, dtype=bool) if view.same_as(grid) else None
        if full is not None:
            full[
                window.row_off : window.row_off + window.height,
                window.col_off : window.col_off + window.width,
            ] = mask
            overlay = full
        else:
            overlay = _preview_mask(grid, view, mask, window)
        export.write_quicklook(
            png,
            export.scene_rgb(scene, view),
            [(overlay, OBJECT_COLOUR)],
            outlines=[(overlay, OBJECT_COLOUR)],
        )
        result.output, result.geojson, result.quicklook = (str(p) for p in paths)
    return result


def _mask_blocks(
    grid: Grid, mask: np.ndarray, window: Window
) -> Iterator[tuple[Window, np.ndarray]]:
    """Full-width strips of the scene-sized mask: memory stays flat on large scenes."""
    r0, c0 = int(window.row_off), int(window.col_off)
    for strip in grid.windows():
        block = np.zeros((int(strip.height), grid.width), dtype=np.uint8)
        top, bottom = (
            max(r0, int(strip.row_off)),
            min(r0 + mask.shape[0], int(strip.row_off + strip.height)),
        )
        if top < bottom:
            block[
                top - int(strip.row_off) : bottom - int(strip.row_off), c0 : c0 + mask.shape[1]
            ] = mask[top - r0 : bottom - r0]
        yield strip, block


def _preview_mask(grid: Grid, view: Grid, mask: np.ndarray, window: Window) -> np.ndarray:
    """The mask sampled onto a preview grid (nearest pixel)."""
    rows = ((np.arange(view.height) + 0.5) * grid.height / view.height).astype(int)
    cols = ((np.arange(view.width) + 0.5) * grid.width / view.width).astype(int)
    r = rows - int(window.row_off)
    c = cols - int(window.col_off)
    inside_r = (r >= 0) & (r < mask.shape[0])
    inside_c = (c >= 0) & (c < mask.shape[1])
    out = np.zeros(view.shape, dtype=bool)
    out[np.ix_(inside_r, inside_c)] = mask[np.ix_(r[inside_r], c[inside_c])]
    return out
