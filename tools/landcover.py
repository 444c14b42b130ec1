"""Per-pixel land cover of a multispectral scene from spectral rules (`land_cover`).

Classes, decided in this order for each valid pixel (the first rule that holds wins):

1. cloud   bright in blue and SWIR1, or cirrus (S2 B10) reflectance above Sen2Cor's
           thin-cirrus level; the same tests the water tool masks clouds with.
2. snow    NDSI = (green - swir1) / (green + swir1) > 0.4 with NIR > 0.11 (SNOMAP, Hall
           et al. 1995; Dozier 1989) and green > 0.25: snow is bright in the visible and
           NIR, dark in SWIR. The NIR test keeps clear water (also high NDSI) out; the
           brightness test, as in Sen2Cor's snow detection, keeps sediment-laden flood
           water out (green ~0.1-0.15 at top of atmosphere on the Spain flood).
3. water   MNDWI (Xu 2006) above an Otsu threshold (clamped as in tools.water).
4. burned  NBR = (nir - swir2) / (nir + swir2) < -0.2 (Key & Benson 2006: fresh burn
           scars have low NIR and high SWIR2), dark (NIR < 0.15) and not vegetated.
           One date cannot tell a scar from dark soil or shade: burn_severity with a
           pre-fire scene is the reliable tool.
5. vegetation  NDVI (Rouse et al. 1974) above an Otsu threshold on the land pixels,
           clamped to 0.2-0.4 (NDVI 0.2 is the usual soil/sparse-vegetation limit, e.g.
           Sobrino et al. 2004); dense above a second Otsu cut among the vegetated
           pixels, clamped to 0.45-0.7 (closed canopies: NDVI > 0.6 on surface
           reflectance; top-of-atmosphere data read ~0.1 lower).
6. built-up / bare  the rest. NDBI = (swir1 - nir) / (swir1 + nir) (Zha et al. 2003) and
           BSI (Rikimaru et al. 2002) are both positive on towns and on dry soil alike
           (measured here: Spanish towns NDBI 0.07-0.11, BSI 0.07-0.10; Patagonian
           desert NDBI 0.12, BSI 0.07), so spectra alone cannot split them at 10-30 m.
           What differs is texture: a town mixes roofs, streets, shade and gardens within
           a few pixels, a field or a desert plain is smooth. Built-up is NDBI > 0 with a
           local coefficient of variation of visible brightness (5x5 pixels) above 0.1
           (towns: median 0.12; fields 0.06; desert 0.03 on these samples). Everything
           else not vegetated is bare soil, including moist, dark soil (NDBI <= 0).

Thresholds learnt from the data (Otsu 1979) come from histograms accumulated window by
window, so a scene of any size is classified in two streaming passes with flat memory.
Scenes in raw DN (the Landsat 7 sample) are brought to relative reflectance before the
indices: dark-object subtraction (Chavez 1988; the 0.1th percentile per band) and the
ETM+ gain over solar irradiance per band (Chander et al. 2009), which leaves only a
common factor (sun elevation, Earth-Sun distance) that normalised differences cancel.
The absolute-reflectance tests (cloud, snow, burn darkness) are skipped there, with a note.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field
from rasterio.windows import Window
from scipy import ndimage

from tools import export
from tools.errors import BandError, EmptyResultError
from tools.raster import DEFAULT_WINDOW_PIXELS, Scene
from tools.spectral import normalized_difference
from tools.water import BOUNDS, CIRRUS, CLOUD_BLUE, CLOUD_SWIR, cut_from_histogram

NODATA = 255
WATER, DENSE_VEGETATION, SPARSE_VEGETATION, BUILT_UP, BARE, BURNED, SNOW, CLOUD = range(1, 9)
CLASSES: dict[int, tuple[str, tuple[int, int, int]]] = {
    WATER: ("water", (30, 110, 255)),
    DENSE_VEGETATION: ("dense vegetation", (0, 110, 0)),
    SPARSE_VEGETATION: ("sparse vegetation", (140, 210, 60)),
    BUILT_UP: ("built-up", (220, 30, 30)),
    BARE: ("bare soil", (210, 170, 110)),
    BURNED: ("burned", (60, 30, 30)),
    SNOW: ("snow", (240, 240, 255)),
    CLOUD: ("cloud", (200, 200, 200)),
}
CLASS_NAMES = [name for name, _ in CLASSES.values()]

# Histogram bins for the joint (MNDWI, NDVI) histogram: 0.01 per bin, so that the NDVI
# histogram of the land pixels can be taken after the water threshold is known, from one
# pass over the data.
EDGES = np.linspace(-1.0, 1.0, 201)
NDVI_BOUNDS = (0.2, 0.4)
DENSE_BOUNDS = (0.45, 0.7)
NDBI_BUILT, TEXTURE_BUILT, TEXTURE_SIZE = 0.0, 0.1, 5
TEXTURE_HALO = TEXTURE_SIZE // 2
NBR_BURNED, BURN_MAX_NIR = -0.2, 0.15
NDSI_SNOW, SNOW_MIN_NIR, SNOW_MIN_GREEN = 0.4, 0.11, 0.25
# Landsat 7 ETM+ low-gain radiance per DN over exo-atmospheric solar irradiance ESUN
# (Chander et al. 2009, Remote Sens. Environ. 113:893, tables 2 and 11), per band: the
# relative reflectance of one DN. High gain scales every band by ~0.66, so the ratios,
# which are all that normalised differences see, hold for either gain setting.
ETM_DN_TO_RELATIVE = {
    "blue": 1.180709 / 1970.0,
    "green": 1.209843 / 1842.0,
    "red": 0.942520 / 1547.0,
    "nir": 0.969291 / 1044.0,
    "swir1": 0.191220 / 225.7,
    "swir2": 0.066496 / 82.06,
}
REQUIRED = ("green", "red", "nir", "swir1")
MIN_POLYGON_PIXELS = 16


class ClassArea(BaseModel):
    pixels: int
    area_ha: float | None = Field(description="ground area; None without a CRS")
    share: float = Field(description="share of the valid pixels (cloud included)")


class LandCoverResult(BaseModel):
    """Per-pixel land cover; raster codes 1 water, 2 dense vegetation, 3 sparse
    vegetation, 4 built-up, 5 bare soil, 6 burned, 7 snow, 8 cloud, 255 nodata."""

    classes: dict[str, ClassArea] = Field(description="pixels, hectares and share per class")
    shares: dict[str, float] = Field(description="class name -> share of valid pixels")
    dominant: str = Field(description="the class with the largest share")
    cloud_share: float
    valid_pixels: int
    valid_area_ha: float | None
    thresholds: dict[str, float] = Field(description="adaptive and fixed cuts, index units")
    codes: dict[int, str] = Field(default_factory=lambda: {k: v[0] for k, v in CLASSES.items()})
    output: str | None = Field(default=None, description="class GeoTIFF, 255 = nodata")
    geojson: str | None = None
    quicklook: str | None = None
    notes: list[str] = Field(default_factory=list)


@dataclass
class _Window:
    """Indices and masks of one window."""

    valid: np.ndarray
    cloud: np.ndarray
    snow: np.ndarray
    mndwi: np.ndarray
    ndvi: np.ndarray
    ndbi: np.ndarray
    texture: np.ndarray
    nbr: np.ndarray | None
    nir: np.ndarray


def local_variation(values: np.ndarray, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Coefficient of variation (std / mean) over size x size pixels; NaNs are skipped."""
    valid = np.isfinite(values)
    x = np.where(valid, values, 0.0).astype(np.float64)
    n = ndimage.uniform_filter(valid.astype(np.float64), size, mode="nearest")
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = ndimage.uniform_filter(x, size, mode="nearest") / n
        square = ndimage.uniform_filter(x * x, size, mode="nearest") / n
        out = np.sqrt(np.maximum(square - mean * mean, 0.0)) / np.abs(mean)
    out[~valid | ~np.isfinite(out)] = np.nan
    return out.astype(np.float32)


def _grow(window: Window, rows: int, height: int) -> Window:
    top = max(0, int(window.row_off) - rows)
    bottom = min(height, int(window.row_off + window.height) + rows)
    return Window(window.col_off, top, window.width, bottom - top)


@dataclass
class LandCoverClassifier:
    scene: Scene
    thresholds: dict[str, float] = field(default_factory=dict)
    dark: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [b for b in REQUIRED if not self.scene.has(b)]
        if missing:
            raise BandError(_missing_message(self.scene, missing))
        self.bands = [*REQUIRED, *(b for b in ("blue", "swir2", "cirrus") if self.scene.has(b))]
        self.reflectance = all(self.scene.bands[b].units != "DN" for b in REQUIRED)
        sensor = self.scene.sensor.key if self.scene.sensor else ""
        self.gains = ETM_DN_TO_RELATIVE if sensor == "landsat7_etm" else {}

    def calibrate(self, max_pixels: int) -> None:
        """DN scenes only: the dark object of each band (0.1th percentile of valid DN)."""
        if self.reflectance:
            return
        lows: dict[str, list[float]] = {}
        for window in self.scene.windows(max_pixels):
            for name, values in self.scene.read(self.bands, window).items():
                finite = values[np.isfinite(values)]
                if finite.size:
                    lows.setdefault(name, []).append(float(np.percentile(finite, 0.1)))
        self.dark = {name: min(v) for name, v in lows.items()}

    def _read(self, window: Window) -> dict[str, np.ndarray]:
        d = self.scene.read(self.bands, window)
        if self.reflectance:
            return d
        return {
            b: (np.maximum(v - self.dark.get(b, 0.0), 0.0) + 1.0) * self.gains.get(b, 1.0)
            for b, v in d.items()
        }

    def indices(self, core: Window) -> _Window:
        window = _grow(core, TEXTURE_HALO, self.scene.grid.height)
        top = int(core.row_off - window.row_off)
        rows = slice(top, top + int(core.height))
        full = self._read(window)
        brightness = (full.get("blue", full["green"]) + full["green"] + full["red"]) / 3
        texture = local_variation(brightness)[rows]
        d = {b: v[rows] for b, v in full.items()}
        valid = np.all([np.isfinite(d[b]) for b in self.bands if b != "cirrus"], axis=0)
        mndwi, ndvi = (
            normalized_difference(d["green"], d["swir1"]),
            normalized_difference(d["nir"], d["red"]),
        )
        ndbi = normalized_difference(d["swir1"], d["nir"])
        nbr = normalized_difference(d["nir"], d["swir2"]) if "swir2" in d else None
        cloud = np.zeros(valid.shape, dtype=bool)
        snow = np.zeros(valid.shape, dtype=bool)
        if self.reflectance:
            with np.errstate(invalid="ignore"):
                if "blue" in d:
                    cloud |= (d["blue"] > CLOUD_BLUE) & (d["swir1"] > CLOUD_SWIR)
                if "cirrus" in d:
                    cloud |= np.nan_to_num(d["cirrus"]) > CIRRUS
                snow = (
                    (mndwi > NDSI_SNOW) & (d["nir"] > SNOW_MIN_NIR) & (d["green"] > SNOW_MIN_GREEN)
                )
        valid &= np.isfinite(mndwi) & np.isfinite(ndvi)
        return _Window(
            valid, cloud & valid, snow & valid & ~cloud, mndwi, ndvi, ndbi, texture, nbr, d["nir"]
        )

    def fit(self, max_pixels: int) -> None:
        """Pass 1: joint (MNDWI, NDVI) histogram of clear pixels, then the Otsu cuts."""
        joint = np.zeros((EDGES.size - 1, EDGES.size - 1), dtype=np.int64)
        for window in self.scene.windows(max_pixels):
            w = self.indices(window)
            clear = w.valid & ~w.cloud & ~w.snow
            joint += np.histogram2d(
                np.clip(w.mndwi[clear], -1, 1), np.clip(w.ndvi[clear], -1, 1), bins=(EDGES, EDGES)
            )[0].astype(np.int64)
        if joint.sum() == 0:
            raise EmptyResultError(
                "land_cover: no clear valid pixel (all nodata, cloud or snow); try another "
                "date or check the band mapping."
            )
        # Calibrated DN (known gains) gives physical normalised differences, so the same
        # bounds hold; DN of unknown gains get unclamped Otsu.
        physical = self.reflectance or bool(self.gains)
        wide = (-1.0, 1.0)
        water_cut = cut_from_histogram(
            joint.sum(axis=1), EDGES, BOUNDS["mndwi"] if physical else wide, True
        )
        land_rows = (EDGES[:-1] + EDGES[1:]) / 2 <= water_cut.threshold
        ndvi_hist = joint[land_rows].sum(axis=0)
        veg_bounds = NDVI_BOUNDS if physical else wide
        try:
            veg_cut = cut_from_histogram(ndvi_hist, EDGES, veg_bounds, True).threshold
        except EmptyResultError:  # a scene of only water
            veg_cut = veg_bounds[0]
        centres = (EDGES[:-1] + EDGES[1:]) / 2
        vegetated = np.where(centres > veg_cut, ndvi_hist, 0)
        if vegetated.sum() > 0:
            dense_bounds = DENSE_BOUNDS if physical else (veg_cut, 1.0)
            dense_cut = cut_from_histogram(vegetated, EDGES, dense_bounds, True).threshold
        else:
            dense_cut = DENSE_BOUNDS[1]
        self.thresholds = {
            "mndwi_water": round(water_cut.threshold, 3),
            "ndvi_vegetation": round(veg_cut, 3),
            "ndvi_dense": round(max(dense_cut, veg_cut), 3),
            "ndbi_built_up": NDBI_BUILT,
            "texture_built_up": TEXTURE_BUILT,
            "nbr_burned_below": NBR_BURNED,
        }
        if self.reflectance:
            self.thresholds["ndsi_snow"] = NDSI_SNOW

    def classify(self, window: Window) -> np.ndarray:
        """Pass 2: uint8 class codes for one window (NODATA where invalid)."""
        w = self.indices(window)
        t = self.thresholds
        classes = np.full(w.valid.shape, NODATA, dtype=np.uint8)
        undecided = w.valid.copy()

        def assign(code: int, rule: np.ndarray) -> None:
            hit = undecided & rule
            classes[hit] = code
            undecided[hit] = False

        with np.errstate(invalid="ignore"):
            assign(CLOUD, w.cloud)
            assign(SNOW, w.snow)
            assign(WATER, w.mndwi > t["mndwi_water"])
            if w.nbr is not None and self.reflectance:  # the darkness test needs reflectance
                dark = w.nir < BURN_MAX_NIR
                assign(BURNED, (w.nbr < NBR_BURNED) & dark & (w.ndvi <= t["ndvi_vegetation"]))
            assign(DENSE_VEGETATION, w.ndvi > t["ndvi_dense"])
            assign(SPARSE_VEGETATION, w.ndvi > t["ndvi_vegetation"])
            assign(BUILT_UP, (w.ndbi > NDBI_BUILT) & (w.texture > TEXTURE_BUILT))
            assign(BARE, undecided)
        return classes


def _missing_message(scene: Scene, missing: list[str]) -> str:
    have = ", ".join(scene.band_names) or "none"
    name = Path(scene.source).name
    if not scene.has("nir") and scene.has("red", "green", "blue"):
        return (
            f"land_cover needs NIR and SWIR bands to tell water, vegetation, built-up and "
            f"bare soil apart, but {name} has only visible bands ({have}); use "
            "describe_scene for a rough green-cover estimate, segment or detect_objects for "
            "objects, or give a multispectral scene (Sentinel-2, Landsat)."
        )
    if scene.has("VV") or scene.has("VH"):
        return (
            f"land_cover needs optical bands (green, red, NIR, SWIR1), but {name} is SAR "
            f"({have}); use water_mask for water on SAR, or give a Sentinel-2/Landsat scene."
        )
    return (
        f"land_cover needs bands {', '.join(REQUIRED)}, but {name} lacks "
        f"{', '.join(missing)} (has {have}); map the bands, e.g. --bands nir=8,swir1=11."
    )


@dataclass
class _Tally:
    pixels: dict[int, int] = field(default_factory=dict)
    m2: dict[int, float] = field(default_factory=dict)


def land_cover(
    scene: Scene,
    out: str | Path | None = None,
    *,
    max_pixels: int = DEFAULT_WINDOW_PIXELS,
) -> LandCoverResult:
    """Classify every pixel of a multispectral scene into water, dense and sparse
    vegetation, built-up, bare soil, burned, snow and cloud, with class areas in
    hectares and shares of the valid pixels.

    `out` (a .tif) also gets `<stem>.geojson` polygons (generalised) and a `<stem>.png`
    quicklook beside it. Raises BandError on scenes without green, red, NIR and SWIR1
    (RGB photos, SAR): visible bands alone cannot separate these classes reliably.
    """
    paths = export.result_paths(out)
    model = LandCoverClassifier(scene)
    model.calibrate(max_pixels)
    model.fit(max_pixels)
    tally = _Tally()
    grid = scene.grid

    def blocks() -> Iterator[tuple[Window, np.ndarray]]:
        for window in scene.windows(max_pixels):
            classes = model.classify(window)
            area = grid.pixel_area_m2(window)
            for code in CLASSES:
                mask = classes == code
                n = int(np.count_nonzero(mask))
                if n == 0:
                    continue
                tally.pixels[code] = tally.pixels.get(code, 0) + n
                if area is not None:
                    m2 = float(np.sum(np.broadcast_to(area, mask.shape), where=mask))
                    tally.m2[code] = tally.m2.get(code, 0.0) + m2
            yield window, classes
        if not tally.pixels:
            raise EmptyResultError(
                "land_cover: no valid pixel in the scene; it is all nodata in green, red, "
                "NIR or SWIR1."
            )

    if paths is None:
        for _ in blocks():
            pass
    else:
        export.write_raster(
            paths[0],
            grid,
            blocks(),
            dtype="uint8",
            nodata=NODATA,
            tags={"eoagent_product": "land_cover"},
        )
    result = _result(tally, grid.crs is not None, model, scene)
    if paths:
        _side_products(paths, scene, result)
        result.output, result.geojson, result.quicklook = (str(p) for p in paths)
    return result


def _result(
    tally: _Tally, georeferenced: bool, model: LandCoverClassifier, scene: Scene
) -> LandCoverResult:
    valid = sum(tally.pixels.values())
    classes: dict[str, ClassArea] = {}
    for code, (name, _) in CLASSES.items():
        n = tally.pixels.get(code, 0)
        ha = round(tally.m2.get(code, 0.0) / 1e4, 4) if georeferenced else None
        classes[name] = ClassArea(pixels=n, area_ha=ha, share=round(n / valid, 6))
    shares = {name: c.share for name, c in classes.items()}
    valid_ha = round(sum(tally.m2.values()) / 1e4, 4) if georeferenced else None
    return LandCoverResult(
        classes=classes,
        shares=shares,
        dominant=max(shares, key=lambda k: shares[k]),
        cloud_share=shares["cloud"],
        valid_pixels=valid,
        valid_area_ha=valid_ha,
        thresholds=model.thresholds,
        notes=_notes(model, scene),
    )


def _notes(model: LandCoverClassifier, scene: Scene) -> list[str]:
    notes = [
        "Rule-based classes from spectral indices (MNDWI, NDVI, NDBI, NBR) with Otsu "
        "thresholds and a texture test for built-up; expect confusion between built-up "
        "and bare soil (field edges, rocky terrain), and between burn scars and dark soil "
        "or shade."
    ]
    if not model.reflectance:
        calibrated = "ETM+ gain/ESUN per band" if model.gains else "no per-band gains known"
        notes.append(
            f"Raw DN input: dark-object subtraction and {calibrated} give relative "
            "reflectance only; cloud, snow and burn-darkness tests were skipped; treat "
            "classes as approximate."
        )
    if not scene.has("swir2"):
        notes.append("No SWIR2 band: burned areas were not mapped.")
    if not scene.has("blue"):
        notes.append("No blue band: clouds not masked; BSI used green in place of blue.")
    sensor = scene.sensor
    if sensor is not None and "l1c" in sensor.key.lower():
        notes.append(
            "Top-of-atmosphere (L1C) reflectance: haze lowers NDVI and raises blue; the "
            "adaptive thresholds absorb part of it."
        )
    return notes


def majority_filter(classes: np.ndarray, size: int = 3) -> np.ndarray:
    """Most frequent class code in a size x size neighbourhood (nodata kept)."""
    codes = [c for c in CLASSES if np.any(classes == c)]
    if not codes:
        return classes
    counts = np.stack(
        [ndimage.uniform_filter((classes == c).astype(np.float32), size) for c in codes]
    )
    out = np.asarray(codes, dtype=np.uint8)[np.argmax(counts, axis=0)]
    out[classes == NODATA] = NODATA
    return out


def _side_products(paths: tuple[Path, Path, Path], scene: Scene, result: LandCoverResult) -> None:
    raster, geojson, png = paths
    from tools.water import _read_back  # one reader of written rasters for all tools

    # Per-pixel classes trace into tens of thousands of specks, and export reprojects each
    # polygon on its own (~7 ms each): polygons come from a 3x3 majority-filtered map on a
    # grid of at most 512 px a side and keep regions of >= MIN_POLYGON_PIXELS pixels.
    poly_grid = export.preview_grid(scene.grid, 512)
    values = _read_back(raster, poly_grid)
    smooth = majority_filter(values)
    labels = {code: name for code, (name, _) in CLASSES.items()}
    features = export.mask_to_features(
        np.isin(smooth, list(CLASSES)),
        poly_grid,
        values=smooth,
        labels=labels,
        min_pixels=MIN_POLYGON_PIXELS,
    )
    export.write_geojson(
        geojson,
        features,
        {
            "product": "land_cover",
            "shares": result.shares,
            "thresholds": result.thresholds,
            "note": f"generalised: 3x3 majority on a {poly_grid.width}x{poly_grid.height} "
            "grid, regions >= {MIN_POLYGON_PIXELS} pixels",
        },
    )
    view = export.preview_grid(scene.grid, 1024)
    values = values if view.same_as(poly_grid) else _read_back(raster, view)
    export.write_quicklook(
        png,
        export.scene_rgb(scene, view),
        [(values == code, colour) for code, (_, colour) in CLASSES.items()],
        alpha=0.6,
    )
