"""Zonal statistics: what a result holds inside a region.

The result measured (the target) is a raster written by a tool (a continuous index, or a
class map: water, flood, burn severity, change) or a GeoJSON of scored footprints
(building_damage). The region is a class raster (inside = its classes of interest, or the
classes asked for), or polygons in any CRS: a box, a GeoJSON file, a footprint set.

- continuous raster: mean, min, max, std and count of the valid pixels inside, and their
  ground area;
- class raster: pixels, ground area and share of each class inside;
- footprints: how many features intersect the region, per damage class, of how many tested.

Areas are true ground areas from the raster's own grid (`Grid.area_m2`, per-row ellipsoidal
areas on EPSG:4326), never pixel size squared in degrees. A region on another grid or in
another CRS is warped (nearest, for classes) or rasterised onto the target's grid, window
by window, so memory stays flat however large the raster. A region that lies elsewhere is
an error that says so, not a silent zero.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
from affine import Affine
from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from shapely.geometry import box, shape
from shapely.ops import unary_union
from shapely.prepared import prep

from tools.errors import ArgumentError, InputFileError, NoOverlapError
from tools.raster import DEFAULT_WINDOW_PIXELS, Grid
from tools.vectors import read_polygons

VECTOR_SUFFIXES = (".geojson", ".json")
UNCLASSIFIED = "unclassified"
# Feature properties that name a footprint's class, in order of preference.
CLASS_PROPERTIES = ("damage_class", "class")
# Points added along each side of a box, so that a lon/lat box stays the same area of
# ground when warped into a projected CRS (its sides are curves there).
BOX_EDGE_POINTS = 32


class ClassStats(BaseModel):
    """One class of a class raster inside the region."""

    code: int = Field(description="pixel value of the class")
    name: str
    pixels: int
    area_ha: float | None = Field(description="ground area; None without a CRS")
    fraction: float = Field(description="share of the valid pixels inside the region")


class ZonalResult(BaseModel):
    """Statistics of a result inside a region."""

    target: str = Field(description="what was measured (a result handle or file name)")
    kind: Literal["continuous", "classes", "footprints"]
    region: str = Field(description="the region, in words")
    region_pixels: int | None = Field(
        default=None, description="pixels of the raster's grid inside the region"
    )
    region_area_ha: float | None = Field(
        default=None, description="ground area of the region where it covers the raster"
    )
    count: int | None = Field(default=None, description="valid raster pixels inside the region")
    area_ha: float | None = Field(default=None, description="ground area of those pixels")
    mean: float | None = None
    min: float | None = None
    max: float | None = None
    std: float | None = None
    classes: list[ClassStats] = Field(default_factory=list)
    class_area_ha: dict[str, float | None] = Field(
        default_factory=dict, description="area inside the region per class name"
    )
    features_tested: int | None = Field(default=None, description="footprints tested")
    features_inside: int | None = Field(
        default=None, description="footprints that intersect the region"
    )
    counts: dict[str, int] = Field(
        default_factory=dict, description="footprints inside the region per class"
    )
    notes: list[str] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _only_what_applies(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # One model serves three kinds; the fields of the other kinds stay out of what the
        # model reads (and of the stored result) instead of showing as nulls.
        data: dict[str, Any] = handler(self)
        keep = _FIELDS_BY_KIND[self.kind]
        return {k: v for k, v in data.items() if k in _COMMON_FIELDS or k in keep}


_COMMON_FIELDS = {"target", "kind", "region", "notes"}
_RASTER_FIELDS = {"region_pixels", "region_area_ha", "count", "area_ha"}
_FIELDS_BY_KIND = {
    "continuous": _RASTER_FIELDS | {"mean", "min", "max", "std"},
    "classes": _RASTER_FIELDS | {"classes", "class_area_ha"},
    "footprints": {"features_tested", "features_inside", "counts"},
}


# -- regions --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassRegion:
    """Pixels of a class raster: inside = `classes`, or the product's classes of interest
    when None (any non-zero valid pixel for a raster eoagent did not write)."""

    path: Path
    label: str
    classes: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ShapeRegion:
    """Polygons (GeoJSON geometries) in `crs`."""

    geometries: tuple[dict[str, Any], ...]
    crs: CRS
    label: str

    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        union = unary_union([shape(g) for g in self.geometries])
        return _to_lonlat(self.crs, union.bounds)


Region = ClassRegion | ShapeRegion


def box_region(
    bounds: Sequence[float], crs: str | CRS = "EPSG:4326", label: str | None = None
) -> ShapeRegion:
    """A box (west, south, east, north) in `crs` (lon/lat by default)."""
    if len(bounds) != 4:
        raise ArgumentError(f"A box needs 4 numbers [west, south, east, north], got {bounds}.")
    west, south, east, north = (float(v) for v in bounds)
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise ArgumentError(f"Box {list(bounds)} holds a non-finite number; give 4 numbers.")
    if west >= east or south >= north:
        raise ArgumentError(
            f"Box {list(bounds)} is empty: give [west, south, east, north] with west < east "
            "and south < north."
        )
    t = np.linspace(0.0, 1.0, BOX_EDGE_POINTS + 1)[:-1]
    xs = np.concatenate([west + t * (east - west), np.full_like(t, east)])
    ys = np.concatenate([np.full_like(t, south), south + t * (north - south)])
    xs = np.concatenate([xs, east - t * (east - west), np.full_like(t, west)])
    ys = np.concatenate([ys, np.full_like(t, north), north - t * (north - south)])
    ring = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
    geometry = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
    crs = _crs(crs)
    name = label or f"box [{west:.6g}, {south:.6g}, {east:.6g}, {north:.6g}] ({_crs_name(crs)})"
    return ShapeRegion((geometry,), crs, name)


def polygon_region(
    path: str | Path, classes: Sequence[str] | None = None, label: str | None = None
) -> ShapeRegion:
    """The polygons of a GeoJSON file; with `classes`, only features of those classes
    (their damage_class or class property, e.g. ['destroyed'])."""
    path = Path(path)
    features, crs = read_polygons(path)
    name = label or path.name
    if classes:
        wanted = {str(c).strip().lower() for c in classes}
        features = [f for f in features if _feature_class(f).lower() in wanted]
        if not features:
            present = sorted({_feature_class(f) for f in read_polygons(path)[0]})
            raise ArgumentError(
                f"No feature of class {', '.join(sorted(wanted))} in {name}; its classes are "
                f"{', '.join(present)}."
            )
        name = f"{name} ({', '.join(sorted(wanted))})"
    return ShapeRegion(tuple(f["geometry"] for f in features), crs, name)


def native_crs(path: str | Path) -> CRS:
    """The CRS a raster or GeoJSON file is stored in (its 'map' coordinates)."""
    path = Path(path)
    if path.suffix.lower() in VECTOR_SUFFIXES:
        return read_polygons(path)[1]
    with _quiet(), rasterio.open(path) as src:
        if src.crs is None:
            raise ArgumentError(f"{path.name} has no CRS; a region cannot be placed on it.")
        return CRS.from_user_input(src.crs.to_wkt())


# -- classes of eoagent's products ----------------------------------------------------


def product_classes(path: str | Path) -> tuple[str | None, dict[int, str], tuple[int, ...]]:
    """(product tag, class names by code, classes of interest) of a class raster
    written by an eoagent tool; empty names and no classes for any other raster."""
    with _quiet(), rasterio.open(path) as src:
        tag = src.tags().get("eoagent_product")
    if tag in ("flood_map", "water_mask"):
        from tools.water import DRY, FLOOD, PERMANENT, WATER

        if tag == "flood_map":
            # "Inside the flood" is new water; a river that was there before is not flooded.
            return tag, {DRY: "dry", PERMANENT: "permanent water", FLOOD: "flood"}, (FLOOD,)
        return tag, {DRY: "dry", WATER: "water"}, (WATER,)
    if tag == "burn_severity_usgs":
        from tools.change import BURN_CLASSES, BURNED_CODES

        return tag, {c: spec[0] for c, spec in BURN_CLASSES.items()}, tuple(BURNED_CODES)
    if tag == "vegetation_change_dndvi":
        from tools.change import VEGETATION_CLASSES, VEGETATION_COLOURS

        return tag, dict(VEGETATION_CLASSES), tuple(VEGETATION_COLOURS)
    if tag and tag.startswith("change_"):
        from tools.change import CHANGE_CLASSES, CHANGE_COLOURS

        return tag, dict(CHANGE_CLASSES), tuple(CHANGE_COLOURS)
    if tag == "segment":
        return tag, {0: "background", 1: "object"}, (1,)
    return tag, {}, ()


def resolve_classes(path: str | Path, wanted: Iterable[int | str], label: str) -> tuple[int, ...]:
    """Class codes from codes or names ('flood', 'high severity', 2)."""
    _, names, _ = product_classes(path)
    by_name = {name.lower(): code for code, name in names.items()}
    codes: list[int] = []
    for item in wanted:
        text = str(item).strip().lower()
        if text.lstrip("-").isdigit():
            codes.append(int(text))
        elif text in by_name:
            codes.append(by_name[text])
        else:
            known = ", ".join(f"{c} {n}" for c, n in names.items()) or "codes only (no names)"
            raise ArgumentError(f"{label} has no class '{item}'; its classes are: {known}.")
    return tuple(dict.fromkeys(codes))


# -- the tool ---------------------------------------------------------------------------


def zonal_stats(
    target: str | Path,
    region: Region,
    *,
    label: str | None = None,
    max_pixels: int = DEFAULT_WINDOW_PIXELS,
) -> ZonalResult:
    """Statistics of `target` (a raster, or a GeoJSON of footprints) inside `region`.

    Raises NoOverlapError when the two cover different places, ArgumentError when the
    region cannot be used (a continuous raster as region, no CRS).
    """
    target = Path(target)
    label = label or target.name
    if not target.is_file():
        raise InputFileError(f"{label}: the file {target.name} is gone; run its tool again.")
    if target.suffix.lower() in VECTOR_SUFFIXES:
        return _footprint_stats(target, region, label)
    return _raster_stats(target, region, label, max_pixels)


def _raster_stats(target: Path, region: Region, label: str, max_pixels: int) -> ZonalResult:
    with _quiet(), rasterio.open(target) as src:
        if src.crs is None:
            raise ArgumentError(
                f"{label} has no CRS, so no region can be placed on it; measure a "
                "georeferenced result."
            )
        grid = Grid(CRS.from_user_input(src.crs.to_wkt()), src.transform, src.width, src.height)
        _check_overlap(label, _to_lonlat(grid.crs, grid.bounds), region)
        continuous = np.dtype(src.dtypes[0]).kind == "f"
        names: dict[int, str] = {} if continuous else product_classes(target)[1]
        with _Masker(region, grid) as masker:
            tally = _accumulate(src, grid, masker, continuous, max_pixels)
            if tally.region_pixels == 0 and isinstance(region, ShapeRegion):
                # A region narrower than a pixel covers no pixel centre: take every pixel
                # it touches instead of reporting nothing.
                masker.all_touched = True
                tally = _accumulate(src, grid, masker, continuous, max_pixels)
                tally.notes.append("The region is smaller than a pixel: every pixel it touches.")
    notes = tally.notes + masker.notes
    if tally.region_pixels == 0:
        if isinstance(region, ShapeRegion):
            raise NoOverlapError(
                f"{region.label} covers no pixel of {label}; draw a region over the raster "
                f"({_bounds_text(_to_lonlat(grid.crs, grid.bounds))})."
            )
        notes.append(
            f"No pixel of {region.label} ({masker.inside_text}) lies on {label}: "
            "nothing is inside the region here."
        )
    elif tally.count == 0:
        notes.append(f"Every pixel of {label} inside the region is nodata.")
    result = ZonalResult(
        target=label,
        kind="continuous" if continuous else "classes",
        region=f"{region.label} ({masker.inside_text})" if masker.inside_text else region.label,
        region_pixels=tally.region_pixels,
        region_area_ha=_ha(tally.region_m2),
        count=tally.count,
        area_ha=_ha(tally.valid_m2),
        notes=notes,
    )
    if continuous:
        if tally.count:
            result.mean, result.min, result.max = tally.mean, tally.min, tally.max
            result.std = math.sqrt(tally.m2 / tally.count)
        return result
    codes = sorted(set(names) | set(tally.class_pixels))
    valid = max(tally.count, 1)
    result.classes = [
        ClassStats(
            code=code,
            name=names.get(code, str(code)),
            pixels=tally.class_pixels.get(code, 0),
            area_ha=_ha(tally.class_m2.get(code, 0.0)),
            fraction=round(tally.class_pixels.get(code, 0) / valid, 6),
        )
        for code in codes
    ]
    result.class_area_ha = {c.name: c.area_ha for c in result.classes}
    return result


@dataclass
class _Tally:
    region_pixels: int = 0
    region_m2: float = 0.0
    count: int = 0
    valid_m2: float = 0.0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    class_pixels: dict[int, int] = field(default_factory=dict)
    class_m2: dict[int, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add_values(self, values: np.ndarray) -> None:
        """Merge a window's values into the running mean and M2 (Chan et al. 1979)."""
        n = values.size
        if n == 0:
            return
        values = values.astype(np.float64)
        mean = float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total
        self.min = min(self.min, float(values.min()))
        self.max = max(self.max, float(values.max()))


def _accumulate(
    src: rasterio.io.DatasetReader, grid: Grid, masker: _Masker, continuous: bool, max_pixels: int
) -> _Tally:
    tally = _Tally()
    nodata = src.nodata
    block_height = int(src.block_shapes[0][0])
    for window in grid.windows(max_pixels, block_height):
        inside = masker.inside(window)
        if not inside.any():
            continue
        data = src.read(1, window=window)
        valid = np.isfinite(data) if continuous else np.ones(data.shape, bool)
        if nodata is not None and not math.isnan(nodata):
            valid &= data != nodata
        tally.region_pixels += int(np.count_nonzero(inside))
        tally.region_m2 += grid.area_m2(inside, window) or 0.0
        selected = inside & valid
        if continuous:
            n_before = tally.count
            tally.add_values(data[selected])
            if tally.count > n_before:
                tally.valid_m2 += grid.area_m2(selected, window) or 0.0
            continue
        tally.count += int(np.count_nonzero(selected))
        tally.valid_m2 += grid.area_m2(selected, window) or 0.0
        for code in np.unique(data[selected]):
            mask = selected & (data == code)
            key = int(code)
            tally.class_pixels[key] = tally.class_pixels.get(key, 0) + int(np.count_nonzero(mask))
            tally.class_m2[key] = tally.class_m2.get(key, 0.0) + (grid.area_m2(mask, window) or 0.0)
    return tally


class _Masker:
    """Which pixels of a window of the target grid lie inside the region."""

    def __init__(self, region: Region, grid: Grid) -> None:
        self.region = region
        self.grid = grid
        self.all_touched = False
        self.notes: list[str] = []
        self.inside_text = ""
        self._src: rasterio.io.DatasetReader | None = None
        if isinstance(region, ClassRegion):
            self._open_classes(region)
        else:
            self._shapes = [
                rasterio.warp.transform_geom(region.crs, grid.crs, g) for g in region.geometries
            ]

    def _open_classes(self, region: ClassRegion) -> None:
        src = rasterio.open(region.path)
        self._src = src
        if src.crs is None:
            raise ArgumentError(f"{region.label} has no CRS, so it cannot serve as a region.")
        if np.dtype(src.dtypes[0]).kind == "f":
            raise ArgumentError(
                f"{region.label} holds continuous values (an index), not classes; use a class "
                "map (water_mask, flood_map, burn_severity...), a box or a polygon as region."
            )
        _, names, interest = product_classes(region.path)
        self.codes = region.classes if region.classes is not None else (interest or None)
        if self.codes is None:
            self.inside_text = "its non-zero classes"
        else:
            self.inside_text = "class " + ", ".join(
                f"{names[c]} ({c})" if c in names else str(c) for c in self.codes
            )
        self.nodata = src.nodata
        own = Grid(CRS.from_user_input(src.crs.to_wkt()), src.transform, src.width, src.height)
        self.same_grid = own.same_as(self.grid)
        if not self.same_grid:
            self.notes.append(
                f"{region.label} is on another grid ({own.describe()}): its classes were "
                "resampled (nearest) onto the measured raster's grid."
            )

    def __enter__(self) -> _Masker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._src is not None:
            self._src.close()

    def inside(self, window: Window) -> np.ndarray:
        shape_ = (int(window.height), int(window.width))
        transform = self.grid.window_transform(window)
        if self._src is None:
            return rasterio.features.geometry_mask(
                self._shapes,
                out_shape=shape_,
                transform=transform,
                invert=True,
                all_touched=self.all_touched,
            )
        if self.same_grid:
            values = self._src.read(1, window=window).astype(np.float64)
            if self.nodata is not None and not math.isnan(self.nodata):
                values[values == self.nodata] = np.nan
        else:
            values = np.full(shape_, np.nan, dtype=np.float64)
            rasterio.warp.reproject(
                source=rasterio.band(self._src, 1),
                destination=values,
                src_nodata=self.nodata,
                dst_transform=transform,
                dst_crs=self.grid.crs,
                dst_nodata=np.nan,
                resampling=Resampling.nearest,
                init_dest_nodata=True,
            )
        return class_mask(values, self.codes)


def class_mask(values: np.ndarray, codes: tuple[int, ...] | None) -> np.ndarray:
    """Inside = one of `codes`, or any non-zero finite value; NaN (nodata) is outside."""
    if codes is None:
        return np.isfinite(values) & (values != 0)
    return np.isin(values, codes)


# -- footprints -------------------------------------------------------------------------


def _footprint_stats(target: Path, region: Region, label: str) -> ZonalResult:
    features, crs = read_polygons(target)
    geometries = [f["geometry"] for f in features]
    footprint_box = unary_union([shape(g).envelope for g in geometries]).bounds
    _check_overlap(label, _to_lonlat(crs, footprint_box), region)
    notes: list[str] = []
    if isinstance(region, ShapeRegion):
        inside_text = ""
        on_region = rasterio.warp.transform_geom(crs, region.crs, geometries)
        area = prep(unary_union([shape(g) for g in region.geometries]))
        hits = [area.intersects(shape(g)) for g in on_region]
    else:
        hits, inside_text = _footprints_on_classes(geometries, crs, region, notes)
    classes = [_feature_class(f) for f in features]
    counts: dict[str, int] = {}
    if any(f.get("properties", {}).get("damage_class") for f in features):
        from tools.damage import DAMAGE_CLASSES

        counts = dict.fromkeys(DAMAGE_CLASSES, 0)
    for cls, hit in zip(classes, hits, strict=True):
        if hit:
            counts[cls] = counts.get(cls, 0) + 1
    return ZonalResult(
        target=label,
        kind="footprints",
        region=f"{region.label} ({inside_text})" if inside_text else region.label,
        features_tested=len(features),
        features_inside=int(sum(hits)),
        counts=counts,
        notes=[
            "A footprint counts as inside when any part of it intersects the region.",
            *notes,
        ],
    )


def _footprints_on_classes(
    geometries: list[dict[str, Any]], crs: CRS, region: ClassRegion, notes: list[str]
) -> tuple[list[bool], str]:
    """Whether each footprint touches a pixel of the region's classes (all_touched, so a
    footprint smaller than a pixel still meets the pixel it lies in)."""
    with _quiet(), rasterio.open(region.path) as src:
        if src.crs is None:
            raise ArgumentError(f"{region.label} has no CRS, so it cannot serve as a region.")
        grid = Grid(CRS.from_user_input(src.crs.to_wkt()), src.transform, src.width, src.height)
        with _Masker(region, grid) as masker:
            on_grid = rasterio.warp.transform_geom(crs, grid.crs, geometries)
            shapes = [shape(g) for g in on_grid]
            window = _covering_window(grid, unary_union([s.envelope for s in shapes]).bounds)
            if window is None:
                return [False] * len(geometries), masker.inside_text
            inside = masker.inside(window)
    transform = grid.window_transform(window)
    hits: list[bool] = []
    for geometry, polygon in zip(on_grid, shapes, strict=True):
        sub = _covering_window(grid, polygon.bounds, within=window)
        if sub is None:
            hits.append(False)
            continue
        r0, c0 = int(sub.row_off - window.row_off), int(sub.col_off - window.col_off)
        part = inside[r0 : r0 + int(sub.height), c0 : c0 + int(sub.width)]
        if not part.any():
            hits.append(False)
            continue
        touched = rasterio.features.geometry_mask(
            [geometry],
            out_shape=part.shape,
            transform=transform * Affine.translation(c0, r0),
            invert=True,
            all_touched=True,
        )
        hits.append(bool((touched & part).any()))
    return hits, masker.inside_text


def _covering_window(
    grid: Grid, bounds: tuple[float, float, float, float], within: Window | None = None
) -> Window | None:
    """The pixels (of `grid`, clipped to it or to `within`) that a map box touches."""
    x0, y0, x1, y1 = bounds
    inverse = ~grid.transform
    cols, rows = zip(*(inverse * (x, y) for x in (x0, x1) for y in (y0, y1)), strict=True)
    lo_c, lo_r, hi_c, hi_r = 0, 0, grid.width, grid.height
    if within is not None:
        lo_c, lo_r = int(within.col_off), int(within.row_off)
        hi_c, hi_r = lo_c + int(within.width), lo_r + int(within.height)
    c0 = max(math.floor(min(cols)), lo_c)
    r0 = max(math.floor(min(rows)), lo_r)
    c1 = min(math.floor(max(cols)) + 1, hi_c)
    r1 = min(math.floor(max(rows)) + 1, hi_r)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def _feature_class(feature: dict[str, Any]) -> str:
    props = feature.get("properties") or {}
    for key in CLASS_PROPERTIES:
        value = props.get(key)
        if value is not None and str(value).strip():
            return str(value)
    return UNCLASSIFIED


# -- overlap --------------------------------------------------------------------------


def _check_overlap(
    label: str, target_box: tuple[float, float, float, float], region: Region
) -> None:
    """NoOverlapError unless the two lon/lat boxes share some area."""
    if isinstance(region, ClassRegion):
        with _quiet(), rasterio.open(region.path) as src:
            if src.crs is None:
                raise ArgumentError(f"{region.label} has no CRS, so it cannot serve as a region.")
            region_box = _to_lonlat(CRS.from_user_input(src.crs.to_wkt()), tuple(src.bounds))
    else:
        region_box = region.lonlat_bounds()
    if box(*target_box).intersection(box(*region_box)).area > 0:
        return
    raise NoOverlapError(
        f"{label} and {region.label} do not overlap: they cover different places "
        f"({label}: {_bounds_text(target_box)}; {region.label}: {_bounds_text(region_box)}). "
        "Measure it inside a region of the same area."
    )


def _to_lonlat(crs: CRS | None, bounds: Sequence[float]) -> tuple[float, float, float, float]:
    if crs is None:
        raise ArgumentError("A result without a CRS cannot be matched with a region.")
    x0, y0, x1, y1 = rasterio.warp.transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
    return (float(x0), float(y0), float(x1), float(y1))


def _bounds_text(b: tuple[float, float, float, float]) -> str:
    return f"lon {b[0]:.4f}..{b[2]:.4f}, lat {b[1]:.4f}..{b[3]:.4f}"


def _crs(value: str | CRS) -> CRS:
    if isinstance(value, CRS):
        return value
    try:
        return CRS.from_user_input(value)
    except Exception as exc:
        raise ArgumentError(
            f"Unknown CRS {value!r}; give an EPSG code such as 'EPSG:4326' or 'EPSG:32630'."
        ) from exc


def _crs_name(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.name


def _ha(m2: float) -> float:
    return round(m2 / 1e4, 4)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # Result rasters are georeferenced; a PNG-pair result is not, and rasterio warns on
    # opening it, which must not turn into an error in a conversation.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield
