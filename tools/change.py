"""Bi-temporal change: burn severity (dNBR), vegetation change (dNDVI) and generic
change between two co-registered scenes.

All three stream the scenes window by window, so memory stays flat however large the
scene: per-pixel differences are classified in one pass, and an adaptive threshold
takes two (a fixed-bin histogram first, then the classification); generic change
takes three (band sample, feature sample, classification; see tools/change_vector.py).
Areas come from the
post grid's true ground area per pixel (`Grid.area_m2`); on a grid without a CRS
(a PNG pair) areas are None and pixel counts stand in for them.

With `out` (a .tif) each tool writes the class raster there, plus `<stem>.geojson`
(polygons of the classes of interest, EPSG:4326) and `<stem>.png` (a quicklook of the
post scene with the classes drawn over it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field
from rasterio.windows import Window

from tools import change_vector as cv
from tools.change_products import (
    ChangeOutputs,
    ClassArea,
    calibration_notes,
    otsu_from_histogram,
    paired,
    run_classification,
    write_side_products,
)
from tools.errors import ArgumentError, BandError, EmptyResultError
from tools.raster import DEFAULT_WINDOW_PIXELS, Scene
from tools.spectral import normalized_difference

# -- burn severity -------------------------------------------------------------------

# USGS FIREMON severity classes for dNBR x 1000 (Key & Benson 2006, "Landscape
# Assessment", FIREMON LA-1, Table LA-5): the table is defined on integer-scaled dNBR,
# so values are rounded to the nearest integer before binning and no value falls between
# two classes. Values outside -500..+1300 keep the extreme class.
BURN_CLASSES: dict[int, tuple[str, int | None, int | None]] = {
    1: ("enhanced regrowth, high", None, -251),
    2: ("enhanced regrowth, low", -250, -101),
    3: ("unburned", -100, 99),
    4: ("low severity", 100, 269),
    5: ("moderate-low severity", 270, 439),
    6: ("moderate-high severity", 440, 659),
    7: ("high severity", 660, None),
}
BURNED_CODES = (4, 5, 6, 7)
# Upper inclusive bounds of classes 1..6 (class 7 is everything above).
_BURN_UPPER = np.array([-251, -101, 99, 269, 439, 659])
BURN_COLOURS: dict[int, tuple[int, int, int]] = {  # the USGS/UN-SPIDER palette, burned only
    4: (255, 255, 0),
    5: (255, 170, 0),
    6: (255, 85, 0),
    7: (160, 0, 160),
}


class BurnResult(ChangeOutputs):
    """dNBR burn severity between a pre-fire and a post-fire scene."""

    classes: list[ClassArea]
    burned_area_ha: float | None = Field(description="low severity and above; None without a CRS")
    burned_pixels: int
    burned_fraction: float
    mean_dnbr: float = Field(description="mean dNBR over valid pixels (unitless, not x1000)")
    mean_dnbr_burned: float | None = Field(description="mean dNBR over burned pixels")
    mean_rdnbr_burned: float | None = Field(
        description="mean relative dNBR (Miller & Thode 2007) over burned pixels, x1000 scale"
    )
    nir_band: str
    valid_pixels: int
    notes: list[str] = []


def classify_dnbr(dnbr: np.ndarray) -> np.ndarray:
    """USGS class code (1..7) per pixel, 0 where dNBR is NaN."""
    scaled = np.rint(np.nan_to_num(dnbr, nan=0.0) * 1000)
    codes = (np.searchsorted(_BURN_UPPER, scaled, side="left") + 1).astype(np.uint8)
    codes[~np.isfinite(dnbr)] = 0
    return codes


def _nir_for_nbr(pre: Scene, post: Scene) -> str:
    # NBR is defined on broad NIR (Landsat TM4 / Sentinel-2 B8, spyndex "N") and SWIR2;
    # the narrow NIR (Sentinel-2 B8A, "nir08") sits closer to B12's 20 m footprint and is
    # an accepted substitute (e.g. UN-SPIDER's Sentinel-2 recipe), so it serves only when
    # a scene lacks broad NIR.
    if pre.has("nir") and post.has("nir"):
        return "nir"
    if pre.has("nir08") and post.has("nir08"):
        return "nir08"
    return "nir"


def burn_severity(
    pre: Scene,
    post: Scene,
    out: str | Path | None = None,
    *,
    align: bool = False,
    window_pixels: int = DEFAULT_WINDOW_PIXELS,
) -> BurnResult:
    """Burn severity from the differenced Normalized Burn Ratio, dNBR = NBR_pre - NBR_post,
    with NBR = (NIR - SWIR2) / (NIR + SWIR2), classed with the USGS FIREMON thresholds.
    Areas per class in hectares, burned area (low severity and above), mean dNBR and the
    mean relative dNBR of burned pixels; writes the class raster when `out` is given."""
    nir = _nir_for_nbr(pre, post)
    for scene, when in ((pre, "pre-fire"), (post, "post-fire")):
        scene.require([nir, "swir2"], f"Burn severity (dNBR) on the {when} scene")
    pre = paired(pre, post, align)
    sums = {"dnbr": 0.0, "dnbr_burned": 0.0, "rdnbr_burned": 0.0, "n_rdnbr": 0.0}

    def blocks() -> Iterator[tuple[Window, np.ndarray]]:
        for window in post.windows(window_pixels):
            before, after = pre.read([nir, "swir2"], window), post.read([nir, "swir2"], window)
            nbr_pre = normalized_difference(before[nir], before["swir2"])
            dnbr = nbr_pre - normalized_difference(after[nir], after["swir2"])
            classes = classify_dnbr(dnbr)
            burned = np.isin(classes, BURNED_CODES)
            sums["dnbr"] += float(np.nansum(dnbr))
            sums["dnbr_burned"] += float(np.sum(dnbr, where=burned))
            # RdNBR = dNBR / sqrt(|NBR_pre|) on the x1000 scale (Miller & Thode 2007);
            # it is undefined where pre-fire NBR is ~0 (no vegetation to burn), so those
            # pixels stay out of the mean.
            rel = burned & (np.abs(nbr_pre) >= 0.001)
            rdnbr = dnbr[rel] * 1000 / np.sqrt(np.abs(nbr_pre[rel]))
            sums["rdnbr_burned"] += float(rdnbr.sum())
            sums["n_rdnbr"] += rdnbr.size
            yield window, classes

    tally, _ = run_classification(blocks(), post.grid, out, "burn_severity_usgs")
    names = {code: spec[0] for code, spec in BURN_CLASSES.items()}
    outputs = write_side_products(
        out,
        post,
        names,
        BURN_COLOURS,
        {"product": "burn_severity", "classes": "USGS FIREMON dNBR (Key & Benson 2006)"},
    )
    burned = tally.count(*BURNED_CODES)
    notes = [
        f"NBR from {nir} and swir2; classes from USGS FIREMON dNBR thresholds (Key & Benson 2006)."
    ]
    if nir == "nir08":
        notes.append("Broad NIR absent: the narrow NIR band (nir08, Sentinel-2 B8A) was used.")
    notes += calibration_notes(pre, post)
    return BurnResult(
        classes=tally.classes(names),
        burned_area_ha=tally.area_ha(*BURNED_CODES),
        burned_pixels=burned,
        burned_fraction=round(burned / tally.valid_pixels, 6),
        mean_dnbr=round(sums["dnbr"] / tally.valid_pixels, 6),
        mean_dnbr_burned=round(sums["dnbr_burned"] / burned, 6) if burned else None,
        mean_rdnbr_burned=round(sums["rdnbr_burned"] / sums["n_rdnbr"], 3)
        if sums["n_rdnbr"]
        else None,
        nir_band=nir,
        valid_pixels=tally.valid_pixels,
        **outputs.model_dump(),
        notes=notes,
    )


# -- vegetation change ---------------------------------------------------------------

VEGETATION_CLASSES = {
    1: "vegetation loss",
    2: "stable",
    3: "vegetation gain",
    4: "change without vegetation",
}
VEGETATION_COLOURS = {1: (220, 30, 30), 3: (30, 200, 60), 4: (240, 200, 40)}
# Loss needs vegetation before and gain needs it after: bare soil or pavement turning
# to water also drops NDVI, but no vegetation was lost. NDVI ~0.3 separates sparse
# vegetation from bare soil and built-up surfaces (0.1-0.2) in most biomes.
VEGETATED_NDVI = 0.3
# Below this |dNDVI| a change is within what atmosphere, phenology and view geometry
# produce between two dates of unchanged vegetation (Lyon et al. 1998 found NDVI
# differencing thresholds of ~0.1 separate noise from clearing), so the adaptive
# threshold never goes lower; 0.2 is the customary fixed alternative.
MIN_NDVI_THRESHOLD = 0.1
_DNDVI_EDGES = np.linspace(0.0, 2.0, 2001)  # |dNDVI| lies in [0, 2]; 0.001 bins


class VegetationChangeResult(ChangeOutputs):
    """dNDVI vegetation loss and gain between two dates."""

    classes: list[ClassArea]
    loss_area_ha: float | None
    gain_area_ha: float | None
    loss_pixels: int
    gain_pixels: int
    loss_fraction: float
    gain_fraction: float
    threshold: float = Field(description="|dNDVI| above which a pixel counts as changed")
    threshold_method: str
    mean_dndvi: float
    valid_pixels: int
    notes: list[str] = []


def vegetation_change(
    pre: Scene,
    post: Scene,
    out: str | Path | None = None,
    *,
    align: bool = False,
    threshold: float | None = None,
    window_pixels: int = DEFAULT_WINDOW_PIXELS,
) -> VegetationChangeResult:
    """Vegetation loss and gain from dNDVI = NDVI_post - NDVI_pre. A pixel is loss below
    -threshold where it was vegetated before (NDVI >= 0.3), gain above +threshold where
    it is vegetated after; other large dNDVI changes are 'change without vegetation'.
    Without `threshold` it is chosen by Otsu's method on |dNDVI| over the whole scene,
    never below 0.1. Areas in hectares."""
    if threshold is not None and not 0 < threshold < 2:
        raise ArgumentError(
            f"threshold {threshold} is outside (0, 2); dNDVI lies in [-2, 2] "
            "and 0.1-0.3 are usual values."
        )
    for scene, when in ((pre, "earlier"), (post, "later")):
        scene.require(["nir", "red"], f"Vegetation change (dNDVI) on the {when} scene")
    pre = paired(pre, post, align)
    windows = list(post.windows(window_pixels))

    def ndvi_pair(window: Window) -> tuple[np.ndarray, np.ndarray]:
        before, after = pre.read(["nir", "red"], window), post.read(["nir", "red"], window)
        return (
            normalized_difference(before["nir"], before["red"]),
            normalized_difference(after["nir"], after["red"]),
        )

    def dndvi(window: Window) -> np.ndarray:
        ndvi_pre, ndvi_post = ndvi_pair(window)
        return ndvi_post - ndvi_pre

    notes: list[str] = []
    if threshold is None:
        counts = np.zeros(_DNDVI_EDGES.size - 1, dtype=np.int64)
        for window in windows:
            values = np.abs(dndvi(window))
            counts += np.histogram(values[np.isfinite(values)], bins=_DNDVI_EDGES)[0]
        if counts.sum() == 0:
            raise EmptyResultError(
                "Vegetation change: no pixel is valid on both dates; check "
                "that pre and post overlap."
            )
        otsu = otsu_from_histogram(counts, _DNDVI_EDGES)
        threshold = max(otsu, MIN_NDVI_THRESHOLD)
        method = "otsu" if otsu >= MIN_NDVI_THRESHOLD else "otsu (floored at 0.1)"
        notes.append(f"Adaptive threshold: Otsu on |dNDVI| gave {otsu:.3f}; used {threshold:.3f}.")
    else:
        method = "fixed"
    total = {"sum": 0.0}

    def blocks() -> Iterator[tuple[Window, np.ndarray]]:
        for window in windows:
            ndvi_pre, ndvi_post = ndvi_pair(window)
            d = ndvi_post - ndvi_pre
            loss, gain = d < -threshold, d > threshold
            classes = np.full(d.shape, 2, dtype=np.uint8)
            classes[loss | gain] = 4
            classes[loss & (ndvi_pre >= VEGETATED_NDVI)] = 1
            classes[gain & (ndvi_post >= VEGETATED_NDVI)] = 3
            classes[~np.isfinite(d)] = 0
            total["sum"] += float(np.nansum(d))
            yield window, classes

    tally, _ = run_classification(blocks(), post.grid, out, "vegetation_change_dndvi")
    outputs = write_side_products(
        out,
        post,
        VEGETATION_CLASSES,
        VEGETATION_COLOURS,
        {"product": "vegetation_change", "threshold": threshold},
    )
    valid = tally.valid_pixels
    return VegetationChangeResult(
        classes=tally.classes(VEGETATION_CLASSES),
        loss_area_ha=tally.area_ha(1),
        gain_area_ha=tally.area_ha(3),
        loss_pixels=tally.count(1),
        gain_pixels=tally.count(3),
        loss_fraction=round(tally.count(1) / valid, 6),
        gain_fraction=round(tally.count(3) / valid, 6),
        threshold=round(float(threshold), 4),
        threshold_method=method,
        mean_dndvi=round(total["sum"] / valid, 6),
        valid_pixels=valid,
        **outputs.model_dump(),
        notes=notes + calibration_notes(pre, post),
    )


# -- generic change ------------------------------------------------------------------

CHANGE_CLASSES = {1: "unchanged", 2: "changed"}
CHANGE_COLOURS = {2: (255, 40, 40)}
ChangeMethod = Literal["auto", "structural", "cva"]
# Bands a change vector may use, in order; SAR only when neither scene shares optical bands.
_OPTICAL = (
    "coastal",
    "blue",
    "green",
    "red",
    "rededge1",
    "rededge2",
    "rededge3",
    "nir",
    "nir08",
    "swir1",
    "swir2",
)
_SAR = ("VV", "VH", "HH", "HV")


class ChangeResult(ChangeOutputs):
    """Generic change between two co-registered scenes."""

    method: str = Field(description="structural (normalised CVA + SSIM + gradients) or cva")
    bands: list[str]
    changed_pixels: int
    changed_fraction: float
    changed_area_ha: float | None = Field(description="None when the grid has no CRS")
    threshold: float = Field(description="Otsu threshold on the change score")
    valid_pixels: int
    notes: list[str] = []


def shared_bands(pre: Scene, post: Scene) -> list[str]:
    for family in (_OPTICAL, _SAR):
        names = [n for n in family if pre.has(n) and post.has(n)]
        if names:
            return names
    raise BandError(
        f"change detection needs bands both scenes share; pre has {', '.join(pre.band_names)}, "
        f"post has {', '.join(post.band_names)}: map the bands to common names (e.g. "
        "--bands red=1,green=2,blue=3) or use scenes of the same sensor."
    )


def change_detection(
    pre: Scene,
    post: Scene,
    out: str | Path | None = None,
    *,
    align: bool = False,
    method: ChangeMethod = "auto",
    window_pixels: int = DEFAULT_WINDOW_PIXELS,
) -> ChangeResult:
    """Pixels that changed between two co-registered scenes (RGB or multispectral, all
    shared bands). `structural` (the `auto` choice) normalises pre to post on
    pseudo-invariant pixels, combines change-vector length with structural (1 - SSIM)
    and gradient differences, thresholds with Otsu and removes specks below a minimum
    mapping unit; `cva` is plain change vector analysis with Otsu. Changed area in
    hectares (pixels when the scenes have no CRS)."""
    if method not in ("auto", "structural", "cva"):
        raise ArgumentError(f"Unknown change method '{method}'; use auto, structural or cva.")
    chosen = "cva" if method == "cva" else "structural"
    bands = shared_bands(pre, post)
    pre = paired(pre, post, align)
    grid = post.grid
    windows = list(post.windows(window_pixels))
    stride = cv.sample_stride(grid.height, grid.width)

    def read(window: Window, halo: int) -> tuple[np.ndarray, np.ndarray, slice]:
        top = max(0, int(window.row_off) - halo)
        bottom = min(grid.height, int(window.row_off + window.height) + halo)
        wide = Window(window.col_off, top, window.width, bottom - top)
        before, after = pre.read(bands, wide), post.read(bands, wide)
        own = slice(int(window.row_off) - top, int(window.row_off) - top + int(window.height))
        return np.stack([before[n] for n in bands]), np.stack([after[n] for n in bands]), own

    def sampled(window: Window, array: np.ndarray) -> np.ndarray:
        # rows/cols on the scene-wide lattice, so the sample does not depend on windowing
        first = (-int(window.row_off)) % stride
        return array[..., first::stride, ::stride].reshape(*array.shape[:-2], -1)

    # Pass 1: band samples -> radiometric calibration (structural) or CVA samples (cva).
    a_parts, b_parts = [], []
    for window in windows:
        a, b, _ = read(window, 0)
        a_parts.append(sampled(window, a))
        b_parts.append(sampled(window, b))
    a_s, b_s = np.concatenate(a_parts, axis=1), np.concatenate(b_parts, axis=1)
    both = np.all(np.isfinite(a_s), axis=0) & np.all(np.isfinite(b_s), axis=0)
    if not both.any():
        raise EmptyResultError(
            "Change detection: no pixel is valid on both dates; check that pre and post overlap."
        )
    a_s, b_s = a_s[:, both], b_s[:, both]
    if chosen == "cva":
        threshold = cv.otsu_threshold(cv.cva_magnitude(a_s, b_s))

        def score(window: Window) -> np.ndarray:
            a, b, _ = read(window, 0)
            return cv.cva_magnitude(a, b)
    else:
        cal = cv.calibrate(a_s, b_s)

        def features(window: Window) -> tuple[np.ndarray, slice]:
            a, b, own = read(window, cv.HALO)
            return cv.structural_features(a, b, cal), own

        # Pass 2: feature samples -> scene-wide scaling and the Otsu threshold.
        samples = []
        for window in windows:
            f, own = features(window)
            samples.append(sampled(window, f[:, own]))
        stacked = np.concatenate(samples, axis=1)
        lo, span = cv.feature_scaling(stacked)
        threshold = cv.otsu_threshold(cv.combined_score(stacked[..., None], lo, span)[:, 0])

    def blocks() -> Iterator[tuple[Window, np.ndarray]]:
        for window in windows:
            if chosen == "cva":
                s = score(window)
                changed, valid = s > threshold, np.isfinite(s)
            else:
                f, own = features(window)
                s = cv.combined_score(f, lo, span)
                valid = np.all(np.isfinite(f), axis=0)
                changed = cv.clean_mask(valid & (s > threshold), valid)[own]
                valid = valid[own]
            classes = np.where(changed, 2, 1).astype(np.uint8)
            classes[~valid] = 0
            yield window, classes

    tally, _ = run_classification(blocks(), grid, out, f"change_{chosen}")
    outputs = write_side_products(
        out, post, CHANGE_CLASSES, CHANGE_COLOURS, {"product": "change_detection", "method": chosen}
    )
    notes = [f"Bands compared: {', '.join(bands)}."]
    if chosen == "structural":
        notes.append(f"Changed objects under {cv.MIN_MAPPING_UNIT} px were dropped as noise.")
    notes += calibration_notes(pre, post)
    return ChangeResult(
        method=chosen,
        bands=bands,
        changed_pixels=tally.count(2),
        changed_fraction=round(tally.count(2) / tally.valid_pixels, 6),
        changed_area_ha=tally.area_ha(2),
        threshold=round(float(threshold), 6),
        valid_pixels=tally.valid_pixels,
        **outputs.model_dump(),
        notes=notes,
    )


__all__ = [
    "BurnResult",
    "ChangeResult",
    "ClassArea",
    "VegetationChangeResult",
    "burn_severity",
    "change_detection",
    "classify_dnbr",
    "vegetation_change",
]
