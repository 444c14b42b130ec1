"""Objects from masks: the offline `detect_objects`.

A mapped result (water, flood, burn severity, change, land cover: class GeoTIFFs) becomes
a set of objects, one per connected component of its classes of interest (water bodies,
flooded fields, burn scars, changed parcels), each measured: pixels, ground area in
hectares (per-pixel areas of the grid, so geographic grids are measured correctly),
centroid in lon/lat, bounding box, and shape (elongation, solidity) for filters such as
"larger than 1 ha" or "not a river". Scored building footprints (building_damage) give
damaged buildings by class. Every object is written as a GeoJSON polygon.

Components are 4-connected by default, as rasterio traces polygons, so one object is one
polygon; 8-connectivity joins pixels touching at corners (diagonal channels).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from pydantic import BaseModel, Field
from pyproj import Geod, Transformer
from rasterio.errors import NotGeoreferencedWarning

from tools import export
from tools.errors import ArgumentError, EmptyResultError, InputFileError
from tools.raster import Grid, pixel_to_map

_GEOD = Geod(ellps="WGS84")
DEFAULT_DAMAGED = ("major-damage", "destroyed")


class MaskObject(BaseModel):
    """One object: a connected region of one class, or one building footprint."""

    id: int
    label: str = Field(description="class of the object, e.g. 'flood' or 'destroyed'")
    pixels: int | None = Field(default=None, description="pixels (None for footprints)")
    area_ha: float | None = Field(description="ground area; None without CRS")
    centroid_lonlat: list[float] | None = Field(default=None, description="[lon, lat]")
    centroid_pixel: list[float] | None = Field(default=None, description="[x, y] in pixels")
    bbox_pixel: list[int] | None = Field(default=None, description="[x1, y1, x2, y2]")
    elongation: float | None = Field(
        default=None, description="major/minor axis ratio of the region: 1 round, >5 a strip"
    )
    solidity: float | None = Field(default=None, description="area / convex hull area, 0-1")


class ObjectsResult(BaseModel):
    """Objects found in a mapped result, with counts and areas."""

    source: str = Field(description="the result file the objects come from")
    method: Literal["connected components", "footprints"]
    classes: list[str] = Field(description="classes whose regions count as objects")
    count: int
    counts: dict[str, int] = Field(description="objects per class")
    total_area_ha: float | None
    area_ha_by_class: dict[str, float] | None
    filters: dict[str, Any] = Field(description="the size and shape filters applied")
    dropped: int = Field(description="regions removed by the filters")
    objects: list[MaskObject] = Field(description="the largest objects (all in output)")
    output: str | None = Field(default=None, description="GeoJSON of every object")
    notes: list[str] = Field(default_factory=list)


def _check_filters(grid: Grid | None, min_area_ha: float | None, max_area_ha: float | None) -> None:
    if grid is not None and grid.crs is None and (min_area_ha or max_area_ha):
        raise ArgumentError(
            "This result has no CRS, so areas in hectares are unknown; filter by min_pixels."
        )
    if min_area_ha is not None and max_area_ha is not None and min_area_ha > max_area_ha:
        raise ArgumentError(f"min_area_ha {min_area_ha} is above max_area_ha {max_area_ha}.")


def find_objects(
    classes_raster: np.ndarray,
    grid: Grid,
    classes: Mapping[int, str],
    *,
    min_area_ha: float | None = None,
    max_area_ha: float | None = None,
    min_pixels: int = 1,
    max_elongation: float | None = None,
    min_solidity: float | None = None,
    connectivity: Literal[1, 2] = 1,
    max_listed: int = 20,
    source: str = "mask",
    out: str | Path | None = None,
) -> ObjectsResult:
    """Objects of the `classes` (code -> name) of a class raster on `grid`: connected
    components per class, filtered by area (ha), pixel count and shape."""
    from skimage.measure import label, regionprops

    _check_filters(grid, min_area_ha, max_area_ha)
    if classes_raster.shape != grid.shape:
        raise ArgumentError(f"mask shape {classes_raster.shape} differs from grid {grid.shape}")
    labels = np.zeros(grid.shape, dtype=np.int32)
    class_of: dict[int, str] = {}
    for code, name in classes.items():
        part, n = label(classes_raster == code, connectivity=connectivity, return_num=True)
        if n:
            base = len(class_of)
            labels[part > 0] = part[part > 0] + base
            class_of.update({base + i: name for i in range(1, n + 1)})
    areas_m2 = _areas_m2(labels, grid, len(class_of))
    to_lonlat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True) if grid.crs else None
    kept: list[MaskObject] = []
    keep_ids: list[int] = []
    for region in regionprops(labels):
        area_ha = None if areas_m2 is None else float(areas_m2[region.label]) / 1e4
        minor = region.axis_minor_length
        elongation = float(region.axis_major_length / minor) if minor > 0 else float("inf")
        solidity = float(region.solidity)
        if (
            region.area < min_pixels
            or (min_area_ha is not None and area_ha is not None and area_ha < min_area_ha)
            or (max_area_ha is not None and area_ha is not None and area_ha > max_area_ha)
            or (max_elongation is not None and elongation > max_elongation)
            or (min_solidity is not None and solidity < min_solidity)
        ):
            continue
        row, col = region.centroid
        x, y = pixel_to_map(grid.transform, np.array(col + 0.5), np.array(row + 0.5))
        r1, c1, r2, c2 = region.bbox
        obj = MaskObject(
            id=len(kept) + 1,
            label=class_of[region.label],
            pixels=int(region.area),
            area_ha=None if area_ha is None else round(area_ha, 4),
            centroid_pixel=[round(col + 0.5, 2), round(row + 0.5, 2)],
            bbox_pixel=[int(c1), int(r1), int(c2), int(r2)],
            elongation=round(elongation, 3) if np.isfinite(elongation) else None,
            solidity=round(solidity, 3),
        )
        if to_lonlat is not None:
            lon, lat = to_lonlat.transform(float(x), float(y))
            obj.centroid_lonlat = [round(float(lon), 7), round(float(lat), 7)]
        kept.append(obj)
        keep_ids.append(region.label)
    n_regions = len(class_of)
    result = _summary(
        kept,
        list(classes.values()),
        source,
        "connected components",
        grid.crs is not None,
        max_listed,
    )
    result.dropped = n_regions - len(kept)
    result.filters = _filters(
        min_area_ha, max_area_ha, min_pixels, max_elongation, min_solidity, connectivity
    )
    if out is not None:
        new_id = np.zeros(n_regions + 1, dtype=np.int32)
        new_id[keep_ids] = np.arange(1, len(keep_ids) + 1)
        kept_labels = new_id[labels]
        by_id = {o.id: o for o in kept}
        features = export.mask_to_features(kept_labels > 0, grid, values=kept_labels)
        for feature in features:
            obj = by_id[feature["properties"]["value"]]
            feature["properties"].update(
                id=obj.id,
                label=obj.label,
                object_area_ha=obj.area_ha,
                centroid_lonlat=obj.centroid_lonlat,
            )
        export.write_geojson(
            out,
            features,
            {
                "tool": "detect_objects",
                "method": "connected components",
                "source": source,
                **result.filters,
            },
        )
        result.output = str(out)
    return result


def _areas_m2(labels: np.ndarray, grid: Grid, n: int) -> np.ndarray | None:
    """Ground area of every label (index = label), from the grid's per-pixel areas."""
    pixel_area = grid.pixel_area_m2()
    if pixel_area is None:
        return None
    weights = np.broadcast_to(pixel_area, labels.shape)
    return np.bincount(labels.ravel(), weights=weights.ravel(), minlength=n + 1)


def _filters(*values: Any) -> dict[str, Any]:
    names = (
        "min_area_ha",
        "max_area_ha",
        "min_pixels",
        "max_elongation",
        "min_solidity",
        "connectivity",
    )
    return {k: v for k, v in zip(names, values, strict=False) if v is not None}


def _summary(
    objects: list[MaskObject],
    classes: list[str],
    source: str,
    method: Any,
    has_crs: bool,
    max_listed: int,
) -> ObjectsResult:
    counts = {c: sum(o.label == c for o in objects) for c in classes}
    by_class = (
        {c: round(sum(o.area_ha or 0.0 for o in objects if o.label == c), 4) for c in classes}
        if has_crs
        else None
    )
    largest = sorted(objects, key=lambda o: -(o.area_ha or o.pixels or 0))[:max_listed]
    result = ObjectsResult(
        source=source,
        method=method,
        classes=classes,
        count=len(objects),
        counts=counts,
        total_area_ha=round(sum(by_class.values()), 4) if by_class is not None else None,
        area_ha_by_class=by_class,
        filters={},
        dropped=0,
        objects=largest,
    )
    if len(objects) > max_listed:
        result.notes.append(
            f"{len(objects)} objects; the {max_listed} largest are listed, all are in the GeoJSON."
        )
    if not has_crs:
        result.notes.append("No CRS: sizes are in pixels only.")
    return result


def objects_in_raster(
    path: str | Path,
    classes: Iterable[int | str] | None = None,
    *,
    label: str | None = None,
    **options: Any,
) -> ObjectsResult:
    """Objects in a class GeoTIFF written by an eoagent tool (its classes of interest
    unless `classes` names others, by code or name) or any 0/1 mask."""
    from tools.zonal import product_classes, resolve_classes

    path = Path(path)
    label = label or path.stem
    if not path.is_file():
        raise InputFileError(f"{label}: the file {path.name} is gone; run its tool again.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            data = src.read(1)
            nodata = src.nodata
            grid = Grid(src.crs, src.transform, src.width, src.height)
    if data.dtype.kind == "f":
        raise ArgumentError(
            f"{label} holds continuous values (an index), not classes; make a mask first "
            "(water_mask, flood_map, burn_severity, change_detection, land_cover)."
        )
    _, names, interest = product_classes(path)
    if classes:
        codes = resolve_classes(path, classes, label)
    elif interest:
        codes = interest
    else:  # a plain mask: every non-zero, non-nodata value is a class
        codes = tuple(int(v) for v in np.unique(data) if v != 0 and v != nodata)
    if not codes:
        raise EmptyResultError(f"{label} has no pixels of any class; nothing to count.")
    wanted = {int(c): names.get(int(c), str(int(c))) for c in codes}
    return find_objects(data, grid, wanted, source=label, **options)


def objects_in_footprints(
    path: str | Path,
    classes: Iterable[str] | None = None,
    *,
    min_area_ha: float | None = None,
    max_area_ha: float | None = None,
    max_listed: int = 20,
    label: str | None = None,
    out: str | Path | None = None,
) -> ObjectsResult:
    """Buildings of the given damage classes (major-damage and destroyed by default) in
    the scored footprints of building_damage."""
    from shapely.geometry import mapping, shape

    from tools.damage import DAMAGE_CLASSES

    path = Path(path)
    label = label or path.stem
    _check_filters(None, min_area_ha, max_area_ha)
    wanted = [str(c).strip().lower() for c in (classes or DEFAULT_DAMAGED)]
    aliases = {c.split("-")[0]: c for c in DAMAGE_CLASSES}  # "major" -> "major-damage"
    wanted = [aliases.get(c, c) for c in wanted]
    unknown = [c for c in wanted if c not in DAMAGE_CLASSES]
    if unknown:
        raise ArgumentError(
            f"Unknown damage class {', '.join(unknown)}; choose from {', '.join(DAMAGE_CLASSES)}."
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputFileError(f"{label}: cannot read {path.name} as GeoJSON ({exc}).") from exc
    objects: list[MaskObject] = []
    features = []
    for feature in data.get("features", []):
        props = feature.get("properties") or {}
        cls = props.get("damage_class")
        if cls not in wanted or not feature.get("geometry"):
            continue
        geom = shape(feature["geometry"])
        area_ha = abs(_GEOD.geometry_area_perimeter(geom)[0]) / 1e4
        if (min_area_ha is not None and area_ha < min_area_ha) or (
            max_area_ha is not None and area_ha > max_area_ha
        ):
            continue
        c = geom.centroid
        obj = MaskObject(
            id=len(objects) + 1,
            label=cls,
            area_ha=round(area_ha, 5),
            centroid_lonlat=[round(c.x, 7), round(c.y, 7)],
        )
        objects.append(obj)
        features.append(
            {
                "type": "Feature",
                "geometry": mapping(geom),
                "properties": {**props, "id": obj.id, "label": cls, "object_area_ha": obj.area_ha},
            }
        )
    result = _summary(objects, wanted, label, "footprints", True, max_listed)
    result.filters = _filters(min_area_ha, max_area_ha)
    result.dropped = sum(
        (f.get("properties") or {}).get("damage_class") in wanted for f in data.get("features", [])
    ) - len(objects)
    if out is not None:
        export.write_geojson(
            out,
            features,
            {"tool": "detect_objects", "method": "footprints", "source": label, "classes": wanted},
        )
        result.output = str(out)
    return result


def objects_in_result(
    path: str | Path, classes: Sequence[int | str] | None = None, **options: Any
) -> ObjectsResult:
    """Objects in a result file: a class raster (.tif) or scored footprints (.geojson)."""
    path = Path(path)
    if path.suffix.lower() in (".geojson", ".json"):
        allowed = {"min_area_ha", "max_area_ha", "max_listed", "label", "out"}
        ignored = sorted(k for k, v in options.items() if k not in allowed and v is not None)
        result = objects_in_footprints(
            path,
            [str(c) for c in classes] if classes else None,
            **{k: v for k, v in options.items() if k in allowed},
        )
        if ignored:
            result.notes.append(f"Filters {', '.join(ignored)} apply to masks, not footprints.")
        return result
    return objects_in_raster(path, classes, **options)
