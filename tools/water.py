"""Surface water on one date (`water_mask`) and new flood water between two dates
(`flood_map`), from optical indices, SAR backscatter, or both fused.

Optical evidence is MNDWI (Xu 2006), or NDWI (McFeeters 1996) without SWIR, with clouds
as nodata; SAR evidence is VV and VH in dB after a 5x5 boxcar in linear power (against
speckle). Each is thresholded with Otsu (1979) on a histogram accumulated window by window
(pass 1), then scored in [-1, 1] (0 on the threshold, +-1 at the Otsu class means) and
classified window by window (pass 2). Fusion weighs the two scores so that where one
sensor is unsure (mixed pixels, shallow or turbid water, water among vegetation) the other
decides. Specks and pinholes of <= `min_pixels` are cleaned; windows are read with a halo
of more rows than the speckle filter plus `min_pixels`, so results do not depend on the
window size (a component of <= min_pixels pixels spans no more rows than that, and a
larger one always shows more pixels than that inside the halo).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from pydantic import BaseModel, Field
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from scipy import ndimage
from skimage.filters import threshold_otsu

from tools import export
from tools.errors import ArgumentError, BandError, EmptyResultError
from tools.raster import DEFAULT_WINDOW_PIXELS, Grid, Scene, check_same_grid
from tools.spectral import normalized_difference

Method = Literal["auto", "optical", "sar", "fusion"]

NODATA = 255
DRY, WATER = 0, 1
PERMANENT, FLOOD = 1, 2
WATER_BLUE = (30, 110, 255)
PERMANENT_BLUE = (0, 40, 160)
FLOOD_RED = (255, 40, 40)

# Histogram bins: fixed edges so histograms of windows add up exactly.
INDEX_EDGES = np.linspace(-1.0, 1.0, 401)  # 0.005 per bin
DB_EDGES = np.linspace(-45.0, 15.0, 601)  # 0.1 dB per bin

# Where Otsu may put the thresholds. Open water backscatter: VV below about -15 to -20 dB,
# VH below about -20 to -26 dB (Twele et al. 2016, Int. J. Remote Sens. 37:2990; UN-SPIDER
# recommended practice for S1 flood mapping); a Sen1Floods11 per-event VH Otsu threshold
# ranges -20.4 (Bolivia) .. -25.1 dB (Spain). MNDWI: 0 on surface reflectance (Xu 2006);
# top-of-atmosphere data (L1C) shift it upwards because path radiance lifts green more
# than SWIR, hence the upper bound well above 0.
BOUNDS = {
    "mndwi": (-0.1, 0.4),
    "ndwi": (-0.2, 0.4),
    "vv_db": (-20.0, -15.0),
    "vh_db": (-26.0, -20.0),
}

# Clouds for the optical evidence: bright in blue and in SWIR (water and snow are dark in
# SWIR), like the first brightness tests of the Sen2Cor scene classification; cirrus band
# (B10) TOA > 0.012, about Sen2Cor's thin-cirrus level. Thresholds sit above bright roofs.
CLOUD_BLUE, CLOUD_SWIR, CIRRUS = 0.25, 0.2, 0.012

# Fusion, on scores o (optical) and s (SAR) in [-1, 1]. Water where
# - o > 0, unless o is marginal (< STRONG) and s is at or past the land class mean (<= -VETO):
#   a strong scatterer (building, tree row) in the pixel; this drops built-up shadows and
#   the mixed edges of fields next to houses, hedges and orchards;
# - or the even vote (OPTICAL_WEIGHT * o + SAR_WEIGHT * s) > 0: the other sensor decides
#   for mixed pixels near one sensor's threshold;
# - or s >= STRONG and o > -STRONG: bright, sediment-laden water that SAR sees clearly.
# Optical leads because S2 shows the shallow, turbid water among crops that C-band SAR
# misses (emergent vegetation double bounce, wind); SAR's dark evidence is reliable, its
# bright evidence less so, hence a veto only at the land mean.
OPTICAL_WEIGHT, SAR_WEIGHT = 0.5, 0.5
STRONG, VETO = 0.5, 0.99

SPECKLE_SIZE = 5  # 5x5 boxcar ~ 50 m at 10 m pixels: ENL ~25 from single-look GRD
SPECKLE_HALO = SPECKLE_SIZE // 2


class _WaterStats(BaseModel):
    water_fraction: float = Field(description="share of the valid (post) pixels that are water")
    water_area_ha: float | None = Field(description="ground area of water; None without a CRS")
    valid_pixels: int
    valid_area_ha: float | None
    method: Literal["optical", "sar", "fusion"]
    thresholds: dict[str, float] = Field(description="adaptive thresholds (index units or dB)")
    output: str | None = Field(default=None, description="class GeoTIFF, 255 = nodata")
    geojson: str | None = None
    quicklook: str | None = None
    notes: list[str] = Field(default_factory=list)


class WaterResult(_WaterStats):
    """Surface water on one date; raster classes 0 dry, 1 water."""

    water_pixels: int


class FloodResult(_WaterStats):
    """New flood water on post versus pre, permanent water apart; raster classes 0 dry,
    1 permanent water, 2 flood."""

    flooded_area_ha: float | None = Field(description="post water not on pre (all without pre)")
    permanent_water_ha: float | None = Field(description="water on both dates; None without pre")


@dataclass
class Cut:
    """An adaptive threshold and the class means on either side of it."""

    threshold: float
    water_mean: float
    land_mean: float

    def score(self, values: np.ndarray) -> np.ndarray:
        """Signed evidence for water in [-1, 1]: 0 on the threshold, 1 at the water mean."""
        half_gap = max(abs(self.water_mean - self.land_mean) / 2, 1e-6)
        sign = 1.0 if self.water_mean > self.land_mean else -1.0
        return np.clip(sign * (values - self.threshold) / half_gap, -1, 1)


def cut_from_histogram(
    counts: np.ndarray, edges: np.ndarray, bounds: tuple[float, float], water_above: bool
) -> Cut:
    """Otsu on an accumulated histogram, clamped to `bounds`, with the class means."""
    centres = (edges[:-1] + edges[1:]) / 2
    if counts.sum() == 0:
        raise EmptyResultError(
            "No valid pixel to set a water threshold from; the scene is all "
            "nodata (or cloud) in the bands used."
        )
    occupied = np.flatnonzero(counts)
    if occupied.size == 1:  # a uniform scene: no split to find
        threshold = float(np.clip(centres[occupied[0]], *bounds))
    else:
        threshold = float(np.clip(threshold_otsu(hist=(counts, centres)), *bounds))
    below, above = centres <= threshold, centres > threshold

    def mean(sel: np.ndarray, fallback: float) -> float:
        n = counts[sel].sum()
        return float((counts[sel] * centres[sel]).sum() / n) if n else fallback

    # A side without pixels (a scene of only land) falls back to a bound, so that the
    # scores stay finite and the whole scene lands on one side of the threshold.
    lo, hi = (
        mean(below, bounds[0] - 0.5 * abs(bounds[1] - bounds[0]) - 1e-3),
        mean(above, bounds[1] + 0.5 * abs(bounds[1] - bounds[0]) + 1e-3),
    )
    return Cut(threshold, hi, lo) if water_above else Cut(threshold, lo, hi)


@dataclass
class OpticalEvidence:
    scene: Scene
    index: Literal["mndwi", "ndwi"] = field(init=False)
    bands: list[str] = field(init=False)
    cut: Cut | None = None

    def __post_init__(self) -> None:
        self.index = "mndwi" if self.scene.has("swir1") else "ndwi"
        self.bands = ["green", "swir1" if self.index == "mndwi" else "nir"]
        self.bands += [b for b in ("blue", "cirrus") if self.scene.has(b)]

    def values(self, window: Window) -> np.ndarray:
        data = self.scene.read(self.bands, window)
        other = data["swir1"] if self.index == "mndwi" else data["nir"]
        index = normalized_difference(data["green"], other)
        cloud = np.zeros(index.shape, dtype=bool)
        if "blue" in data and self.index == "mndwi":
            with np.errstate(invalid="ignore"):
                cloud |= (data["blue"] > CLOUD_BLUE) & (data["swir1"] > CLOUD_SWIR)
        if "cirrus" in data:
            with np.errstate(invalid="ignore"):
                cloud |= data["cirrus"] > CIRRUS
        index[cloud] = np.nan
        return index


@dataclass
class SarEvidence:
    scene: Scene
    polarisations: list[str] = field(init=False)
    cuts: dict[str, Cut] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.polarisations = [p for p in ("VV", "VH") if self.scene.has(p)]

    def values(self, window: Window) -> dict[str, np.ndarray]:
        """Speckle-filtered dB; the first and last SPECKLE_HALO rows are approximate."""
        return {p: _boxcar_db(v) for p, v in self.scene.read(self.polarisations, window).items()}


def _boxcar_db(db: np.ndarray) -> np.ndarray:
    """Mean in linear power over valid pixels of a 5x5 box, back to dB (NaN stays NaN)."""
    valid = np.isfinite(db)
    power = np.power(10.0, np.where(valid, db, -np.inf).astype(np.float64) / 10.0)
    total = ndimage.uniform_filter(power, SPECKLE_SIZE, mode="nearest")
    share = ndimage.uniform_filter(valid.astype(np.float64), SPECKLE_SIZE, mode="nearest")
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 10 * np.log10(total / share)
    out[~valid | ~np.isfinite(out)] = np.nan
    return out.astype(np.float32)


def _histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    return np.histogram(np.clip(finite, edges[0], edges[-1]), bins=edges)[0]


@dataclass
class WaterClassifier:
    """Thresholds learnt over a whole date, then applied window by window with a halo."""

    grid: Grid
    method: Literal["optical", "sar", "fusion"]
    optical: OpticalEvidence | None
    sar: SarEvidence | None
    min_pixels: int
    max_pixels: int

    @property
    def halo(self) -> int:
        return SPECKLE_HALO + self.min_pixels + 1

    def fit(self) -> None:
        """Pass 1: histograms window by window, then the Otsu cuts."""
        hists: dict[str, np.ndarray] = {}
        for window, core in self.windows():
            if self.optical is not None:
                key = self.optical.index
                hists[key] = hists.get(key, 0) + _histogram(self.optical.values(core), INDEX_EDGES)
            if self.sar is not None:
                top = core.row_off - window.row_off
                for pol, values in self.sar.values(window).items():
                    counts = _histogram(values[top : top + core.height], DB_EDGES)
                    hists[pol] = hists.get(pol, 0) + counts
        if self.optical is not None:
            index = self.optical.index
            self.optical.cut = cut_from_histogram(hists[index], INDEX_EDGES, BOUNDS[index], True)
        if self.sar is not None:
            for pol in self.sar.polarisations:
                bounds = BOUNDS[f"{pol.lower()}_db"]
                self.sar.cuts[pol] = cut_from_histogram(hists[pol], DB_EDGES, bounds, False)

    @property
    def thresholds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.optical is not None and self.optical.cut is not None:
            out[self.optical.index] = round(self.optical.cut.threshold, 4)
        if self.sar is not None:
            out.update({f"{p.lower()}_db": round(c.threshold, 2) for p, c in self.sar.cuts.items()})
        return out

    @property
    def scene(self) -> Scene:
        """The scene whose grid, windows and picture the result takes."""
        evidence = self.optical or self.sar
        if evidence is None:
            raise ArgumentError("A water classifier needs optical or SAR evidence.")
        return evidence.scene

    def windows(self) -> Iterator[tuple[Window, Window]]:
        """(read window with SPECKLE_HALO rows either side, core window)."""
        for core in self.scene.windows(self.max_pixels):
            yield _grow(core, SPECKLE_HALO, self.grid.height), core

    def classify(self, core: Window) -> tuple[np.ndarray, np.ndarray]:
        """Pass 2 for one window: (water, valid) boolean arrays shaped like `core`."""
        padded = _grow(core, self.halo, self.grid.height)
        water, valid = self._decide(padded)
        water = clean_mask(water, valid, self.min_pixels)
        top = core.row_off - padded.row_off
        return water[top : top + core.height], valid[top : top + core.height]

    def _decide(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        shape = (int(window.height), int(window.width))
        optical = np.full(shape, np.nan, dtype=np.float32)
        sar = np.full(shape, np.nan, dtype=np.float32)
        if self.optical is not None and self.optical.cut is not None:
            optical = self.optical.cut.score(self.optical.values(window))
        if self.sar is not None and self.sar.cuts:
            # Read SPECKLE_HALO extra rows so the filter is exact on every row we keep.
            wide = _grow(window, SPECKLE_HALO, self.grid.height)
            top = window.row_off - wide.row_off
            scores = [
                self.sar.cuts[p].score(v[top : top + shape[0]])
                for p, v in self.sar.values(wide).items()
            ]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
                sar = np.nanmean(np.stack(scores), axis=0)
        has_opt, has_sar = np.isfinite(optical), np.isfinite(sar)
        valid = has_opt | has_sar
        o, s = np.nan_to_num(optical), np.nan_to_num(sar)
        both = has_opt & has_sar
        veto = (o < STRONG) & (s <= -VETO)
        vote = OPTICAL_WEIGHT * o + SAR_WEIGHT * s
        fused = ((o > 0) & ~veto) | (vote > 0) | ((s >= STRONG) & (o > -STRONG))
        water = np.where(both, fused, np.where(has_opt, o > 0, s > 0))
        return water & valid, valid


def _grow(window: Window, rows: int, height: int) -> Window:
    top = max(0, int(window.row_off) - rows)
    bottom = min(height, int(window.row_off + window.height) + rows)
    return Window(window.col_off, top, window.width, bottom - top)


def clean_mask(water: np.ndarray, valid: np.ndarray, min_pixels: int) -> np.ndarray:
    """Drop water specks of <= min_pixels pixels (8-connected) and fill dry pinholes of <=
    min_pixels pixels (4-connected, the complement's topology) inside water."""
    if min_pixels <= 0:
        return water & valid
    eight = np.ones((3, 3), dtype=bool)
    water = _drop_small(water, min_pixels, eight)
    holes = _drop_small(~water, min_pixels, None)
    return ~holes & valid


def _drop_small(mask: np.ndarray, max_size: int, structure: np.ndarray | None) -> np.ndarray:
    labels, count = ndimage.label(mask, structure=structure)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes > max_size
    keep[0] = False
    return keep[labels]


def _classifier(
    scenes: Sequence[Scene],
    method: Method,
    align: bool,
    min_pixels: int,
    max_pixels: int,
    label: str,
) -> WaterClassifier:
    if not scenes:
        raise ArgumentError(f"{label}: give at least one scene (optical, SAR or both).")
    optical_scene = next(
        (s for s in scenes if s.has("green") and (s.has("swir1") or s.has("nir"))), None
    )
    sar_scene = next((s for s in scenes if s.has("VV") or s.has("VH")), None)
    if optical_scene is None and sar_scene is None:
        names = "; ".join(f"{Path(s.source).name}: {', '.join(s.band_names)}" for s in scenes)
        raise BandError(
            f"{label} needs green with swir1 or nir (optical) or VV/VH (SAR), but the scene(s) "
            f"have {names}; map the bands (e.g. --bands green=3,nir=8,swir1=11) or give a "
            "multispectral or SAR scene."
        )
    if method == "auto":
        method = (
            "fusion" if optical_scene and sar_scene else ("optical" if optical_scene else "sar")
        )
    need_opt, need_sar = method in ("optical", "fusion"), method in ("sar", "fusion")
    missing = [
        what
        for what, needed, scene in (
            ("an optical scene with green and swir1 or nir", need_opt, optical_scene),
            ("a SAR scene with VV or VH", need_sar, sar_scene),
        )
        if needed and scene is None
    ]
    if missing:
        raise BandError(
            f"{label} method '{method}' needs {missing[0]}; give one, or choose "
            "another method (auto picks what the scenes allow)."
        )
    optical = OpticalEvidence(optical_scene) if need_opt and optical_scene else None
    sar = None
    if need_sar and sar_scene is not None:
        reference = optical_scene if optical is not None and optical_scene else sar_scene
        sar = SarEvidence(check_same_grid(sar_scene, reference, align=align))
    grid = (optical or sar).scene.grid  # type: ignore[union-attr]
    return WaterClassifier(grid, method, optical, sar, min_pixels, max_pixels)


@dataclass
class _Tally:
    grid: Grid
    pixels: dict[str, int] = field(default_factory=dict)
    m2: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, mask: np.ndarray, window: Window) -> None:
        self.pixels[name] = self.pixels.get(name, 0) + int(np.count_nonzero(mask))
        self.m2[name] = self.m2.get(name, 0.0) + (self.grid.area_m2(mask, window) or 0.0)

    def ha(self, name: str) -> float | None:
        return None if self.grid.crs is None else round(self.m2.get(name, 0.0) / 1e4, 4)

    def stats(self, method: str, thresholds: dict[str, float], notes: list[str]) -> dict:
        water, valid = self.pixels["water"], self.pixels["valid"]
        return {
            "water_fraction": round(water / valid, 6),
            "water_area_ha": self.ha("water"),
            "valid_pixels": valid,
            "valid_area_ha": self.ha("valid"),
            "method": method,
            "thresholds": thresholds,
            "notes": notes,
        }


def water_mask(
    scenes: Sequence[Scene],
    out: str | Path | None = None,
    *,
    method: Method = "auto",
    align: bool = False,
    min_pixels: int = 10,
    max_pixels: int = DEFAULT_WINDOW_PIXELS,
) -> WaterResult:
    """Surface water on one date from an optical scene (MNDWI/NDWI), a SAR scene (VV/VH)
    or both on one grid (fused; `method="auto"` fuses when both are given).

    `out` (a .tif) also gets `<stem>.geojson` polygons and a `<stem>.png` quicklook beside
    it. `min_pixels`: specks and pinholes of at most this many pixels are cleaned (10 px =
    0.1 ha at 10 m). `align` resamples the SAR scene onto the optical grid when they differ.
    """
    paths = export.result_paths(out)
    model = _classifier(scenes, method, align, min_pixels, max_pixels, "water_mask")
    model.fit()
    tally = _stream(model, None, paths, "water_mask")
    notes = _notes(model)
    stats = tally.stats(model.method, model.thresholds, notes)
    result = WaterResult(water_pixels=tally.pixels["water"], **stats)
    if paths:
        _side_products(paths, model, {WATER: ("water", WATER_BLUE)})
        result.output, result.geojson, result.quicklook = (str(p) for p in paths)
    return result


def flood_map(
    post: Sequence[Scene],
    pre: Sequence[Scene] | None = None,
    out: str | Path | None = None,
    *,
    align: bool = False,
    method: Method = "auto",
    min_pixels: int = 10,
    max_pixels: int = DEFAULT_WINDOW_PIXELS,
) -> FloodResult:
    """Water on `post`; with `pre`, new flood water (water on post, not on pre) apart from
    permanent water (water on both). Each date gets its own adaptive thresholds.

    Without `pre`, all post water is reported as `flooded_area_ha` (with a note). `align`
    resamples `pre` (and a SAR scene) onto the post grid when grids differ; otherwise a
    mismatch raises GridMismatchError.
    """
    paths = export.result_paths(out)
    after = _classifier(post, method, align, min_pixels, max_pixels, "flood_map (post)")
    before = None
    if pre:
        pre_on_post = [check_same_grid(s, after.scene, align=align) for s in pre]
        before = _classifier(pre_on_post, method, align, min_pixels, max_pixels, "flood_map (pre)")
        before.fit()
    after.fit()
    tally = _stream(after, before, paths, "flood_map")
    notes = _notes(after)
    thresholds = {f"post_{k}": v for k, v in after.thresholds.items()}
    if before is None:
        notes.append(
            "No pre-event scene: all water on post is reported as flooded; permanent "
            "water could not be separated (give --pre to separate it)."
        )
    else:
        thresholds.update({f"pre_{k}": v for k, v in before.thresholds.items()})
        if lost := tally.pixels["valid"] - tally.pixels["both_valid"]:
            notes.append(f"{lost} pixels valid on post but not on pre are nodata in the flood map.")
    permanent = tally.ha("permanent") if before is not None else None
    stats = tally.stats(after.method, thresholds, notes)
    result = FloodResult(flooded_area_ha=tally.ha("flood"), permanent_water_ha=permanent, **stats)
    if paths:
        classes = {FLOOD: ("flood", FLOOD_RED)}
        if before is not None:
            classes[PERMANENT] = ("permanent water", PERMANENT_BLUE)
        _side_products(paths, after, classes)
        result.output, result.geojson, result.quicklook = (str(p) for p in paths)
    return result


def _stream(
    after: WaterClassifier,
    before: WaterClassifier | None,
    paths: tuple[Path, Path, Path] | None,
    tag: str,
) -> _Tally:
    """Pass 2: classify window by window, sum areas, stream the classes to the GeoTIFF.
    A water mask is 0 dry / 1 water; a flood map 0 dry / 1 permanent / 2 flood."""
    tally = _Tally(after.grid)
    flood = tag == "flood_map"

    def blocks() -> Iterator[tuple[Window, np.ndarray]]:
        for _, core in after.windows():
            water, valid = after.classify(core)
            tally.add("water", water, core)
            tally.add("valid", valid, core)
            classes = np.where(water, FLOOD if flood else WATER, DRY).astype(np.uint8)
            if before is not None:
                was_water, was_valid = before.classify(core)
                classes[water & was_water] = PERMANENT
                valid = valid & was_valid
                tally.add("both_valid", valid, core)
            if flood:
                tally.add("flood", (classes == FLOOD) & valid, core)
                tally.add("permanent", (classes == PERMANENT) & valid, core)
            classes[~valid] = NODATA
            yield core, classes
        # Raised inside the stream, so write_raster never puts an empty raster in place.
        if tally.pixels["valid"] == 0 or tally.pixels.get("both_valid", 1) == 0:
            raise EmptyResultError(
                f"{tag}: no valid pixel (on both dates, with pre); check that the scenes "
                "overlap and are not all nodata or cloud in the bands used."
            )

    if paths is None:
        for _ in blocks():
            pass
    else:
        tags = {"eoagent_product": tag}
        export.write_raster(paths[0], after.grid, blocks(), dtype="uint8", nodata=NODATA, tags=tags)
    return tally


def _side_products(
    paths: tuple[Path, Path, Path],
    model: WaterClassifier,
    classes: dict[int, tuple[str, tuple[int, int, int]]],
    max_polygon_side: int = 2048,
) -> None:
    """GeoJSON and quicklook read back from the written raster, decimated for big scenes."""
    raster, geojson, png = paths
    poly_grid = export.preview_grid(model.grid, max_polygon_side)
    values = _read_back(raster, poly_grid)
    labels = {code: name for code, (name, _) in classes.items()}
    features = export.mask_to_features(
        np.isin(values, list(classes)), poly_grid, values=values, labels=labels
    )
    properties: dict[str, object] = {"method": model.method, "thresholds": model.thresholds}
    if not poly_grid.same_as(model.grid):
        properties["note"] = f"traced on a {poly_grid.width}x{poly_grid.height} preview"
    export.write_geojson(geojson, features, properties)
    view = export.preview_grid(model.grid, 1024)
    small = values if view.same_as(poly_grid) else _read_back(raster, view)
    background = export.scene_rgb(model.scene, view)
    export.write_quicklook(
        png, background, [(small == code, colour) for code, (_, colour) in classes.items()]
    )


def _read_back(raster: Path, grid: Grid) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(raster) as src:
            return src.read(1, out_shape=grid.shape)


def _notes(model: WaterClassifier) -> list[str]:
    notes = [n for n in (model.optical.scene.notes if model.optical else []) if "DN" in n]
    if model.optical is not None and model.optical.index == "ndwi":
        notes.append(
            "No SWIR band: NDWI (green/NIR) used; it misses turbid water and takes "
            "built-up shadow for water more often than MNDWI."
        )
    sensor = model.optical.scene.sensor if model.optical else None
    if sensor is not None and "l1c" in sensor.key.lower():
        notes.append(
            "Top-of-atmosphere (L1C) reflectance: thresholds adapt to the scene, but "
            "haze biases absolute index values."
        )
    if model.method == "fusion":
        notes.append(
            "Fusion: optical water unless SAR is strongly against a marginal optical "
            "call; plus an even optical/SAR vote and strong SAR water the optical "
            "view does not strongly contradict."
        )
    if model.method == "sar":
        notes.append(
            "SAR only: smooth dry surfaces (tarmac, sand, radar shadow) can look like "
            "water; flooded vegetation and wind-roughened water can be missed."
        )
    if model.min_pixels:
        notes.append(f"Specks and pinholes of <= {model.min_pixels} pixels removed.")
    return notes
