"""Per-building damage from a pre/post image pair and building footprints.

Each footprint is scored from how much its pixels changed between the two dates and
from how much the post image looks like debris there, then classed on the xView2 joint
damage scale (no-damage, minor-damage, major-damage, destroyed).

There are no labels to train on, so the score is built to be explainable rather than
learned. Pre and post usually come from different sensors, seasons and resolutions, so
no single raw difference means "damage": the pre image is first matched to the post
image's radiometry (per-band quantile mapping, i.e. histogram matching), both are lightly
smoothed so sensor sharpness matters less, and each feature is then measured in robust
standard deviations above what an *unchanged* building of this very scene looks like.
That reference comes from the least-changed quarter of the scene's buildings, capped so
that a scene where nearly everything is destroyed cannot redefine "unchanged" as rubble.
The result is a relative, scene-adaptive score, not a calibrated probability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio.features
import rasterio.warp
from pydantic import BaseModel, Field
from pyproj import CRS, Geod
from rasterio.windows import Window
from scipy import ndimage as ndi
from shapely.geometry import box, mapping, shape
from skimage.feature import structure_tensor, structure_tensor_eigenvalues
from skimage.metrics import structural_similarity

from tools.errors import ArgumentError, EmptyResultError, InputFileError
from tools.export import preview_grid, scene_rgb, write_geojson, write_quicklook
from tools.raster import Grid, Scene, check_same_grid
from tools.vectors import read_polygons

DamageClass = Literal["no-damage", "minor-damage", "major-damage", "destroyed"]
DAMAGE_CLASSES: tuple[DamageClass, ...] = ("no-damage", "minor-damage", "major-damage", "destroyed")
UNSCORED = "unscored"
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "no-damage": (40, 220, 40),
    "minor-damage": (255, 235, 0),
    "major-damage": (255, 140, 0),
    "destroyed": (235, 0, 0),
    UNSCORED: (160, 160, 160),
}

# A footprint smaller than this many pixels (~4 m² at 0.5 m) holds too few pixels for a
# structural comparison (the SSIM window alone is ~7x7): it is reported, not guessed.
MIN_PIXELS = 16
# Smoothing applied to both dates for SSIM and colour change: suppresses the finest spatial
# frequencies, where a sharp post image and a resampled pre image differ most.
SMOOTH_SIGMA_PX = 1.0
# Pixels read around each footprint so that filters (SSIM window, structure tensor) see
# real neighbours at the footprint's edge instead of padding.
HALO_PX = 12
# Texture is measured at full resolution: smoothing it (0.7 px) or keeping 2-3 px away
# from the outline both blurred intact from flattened blocks on the Joplin pair.
TEXTURE_SIGMA_PX = 0.0
QUANTILES = np.linspace(0.0, 1.0, 1025)
SAMPLE_PIXELS = 2_000_000

# How each feature enters the score. Structure, texture change and the post-only debris
# cue carry it: a collapsed roof changes structure and turns a smooth plane into
# incoherent high-frequency clutter, whatever the sensors. Colour change is weak evidence
# (tarps, repairs, season and sensor colour all move it): on the Joplin pair it separated
# intact from flattened blocks about a fifth as well as the others (d' 0.4 vs 1.7-2.6).
WEIGHTS = {"dissimilarity": 0.30, "texture_change": 0.30, "colour_change": 0.10, "debris": 0.30}
# Smallest robust spread assumed for each feature, so a scene whose unchanged buildings
# are pixel-identical (a synthetic pair, the same image twice) does not divide by zero.
SPREAD_FLOOR = {
    "dissimilarity": 0.03,
    "texture_change": 0.08,
    "colour_change": 0.01,
    "debris": 0.002,
}
# The most change an undamaged building can plausibly show between two different sensors
# and seasons (dissimilarity = 1 - SSIM; texture change as a log ratio, 0.3 = +35%
# gradient energy; colour change in data ranges). Set just above the intact houses of the
# Joplin 2011 pair (NAIP 2010 vs post-event aerial: ~0.6, ~0.1, ~0.3). They bind only when
# most of a scene's buildings changed, so "unchanged" cannot drift into rubble.
REFERENCE_CAP = {"dissimilarity": 0.70, "texture_change": 0.30, "colour_change": 0.40}
# Share of a scene's buildings taken as the "least changed" reference population.
REFERENCE_QUANTILE = 25.0
# Robust z at which a feature counts as full evidence of damage: 2.5 spreads above the
# unchanged reference is outside sensor and season noise (~1% of a normal tail).
Z_FULL = 2.5
# Class limits on the score. A score is the weighted share of full evidence, so:
# below 0.2 the cues average under ~0.5 spread above unchanged (no-damage); up to 0.45 some
# change, typically colour or partial texture (tarps, torn shingles: minor); up to 0.7
# strong change in structure or texture (major); above it nearly every cue is saturated
# (destroyed: roof gone, rubble). Not calibrated against labels; see DamageResult.notes.
CLASS_LIMITS = (0.2, 0.45, 0.7)

_GEOD = Geod(ellps="WGS84")


class DamageResult(BaseModel):
    """Per-building damage summary; the per-building values are in `output`."""

    buildings_total: int = Field(description="footprints in the footprint file")
    buildings_in_scene: int = Field(description="footprints that intersect the scene")
    buildings_outside: int = Field(description="footprints outside the scene, skipped")
    buildings_scored: int = Field(description="footprints that received a score and class")
    buildings_unscored: int = Field(description=f"footprints under {MIN_PIXELS} valid pixels")
    counts: dict[str, int] = Field(description="scored buildings per xView2 damage class")
    area_ha: dict[str, float] = Field(description="geodesic footprint area per class, ha")
    mean_score: float | None = Field(description="mean damage score (0-1) of scored buildings")
    output: str = Field(description="GeoJSON of the footprints with damage_score, damage_class")
    quicklook: str = Field(description="PNG: footprints outlined by class over the post image")
    notes: list[str] = Field(default_factory=list)


@dataclass
class Footprint:
    """One building: its geometry in EPSG:4326 and in the raster CRS, and its feature."""

    feature: dict[str, Any]
    geometry_wgs84: dict[str, Any]
    geometry_grid: dict[str, Any]
    window: Window


def building_damage(
    pre: Scene,
    post: Scene,
    footprints: str | Path,
    out: str | Path | None = None,
    *,
    align: bool = False,
    buffer_m: float = 0.0,
) -> DamageResult:
    """Score and class every footprint that lies in the scene; write GeoJSON and a PNG.

    `buffer_m` widens each footprint by a ring (metres) so that debris thrown around a
    building counts too; `align` resamples pre onto post's grid when they differ.
    """
    if buffer_m < 0 or buffer_m > 50:
        raise ArgumentError(f"buffer_m={buffer_m} must be between 0 and 50 metres.")
    dest = _output_path(out, post)
    resampled = not pre.grid.same_as(post.grid)
    pre = check_same_grid(pre, post, align=align)
    bands = _common_bands(pre, post)
    features, source_crs = read_polygons(footprints, "building outlines")
    inside = _footprints_in_scene(features, source_crs, post.grid)
    if not inside:
        raise EmptyResultError(
            f"None of the {len(features)} footprints in {Path(footprints).name} intersect the "
            f"scene ({_bounds_text(post.grid)}); use footprints of the same area as the imagery."
        )
    quantile_maps, data_range = _radiometric_matching(pre, post, bands)
    ring_px = _buffer_pixels(post.grid, buffer_m)

    values = [
        _building_features(pre, post, bands, quantile_maps, data_range, fp, ring_px)
        for fp in inside
    ]
    table = {k: np.array([v[k] if v else np.nan for v in values]) for k in WEIGHTS}
    scores, reference = _damage_scores(table)

    out_features: list[dict[str, Any]] = []
    counts: dict[str, int] = dict.fromkeys(DAMAGE_CLASSES, 0)
    area_ha: dict[str, float] = dict.fromkeys(DAMAGE_CLASSES, 0.0)
    classes: list[str] = []
    for fp, vals, score in zip(inside, values, scores, strict=True):
        cls = UNSCORED if vals is None else damage_class(float(score))
        classes.append(cls)
        area = _geodesic_area_ha(fp.geometry_wgs84)
        props = dict(fp.feature.get("properties") or {})
        props.update(
            damage_score=None if vals is None else round(float(score), 4),
            damage_class=cls,
            footprint_area_ha=round(area, 5),
        )
        if vals is not None:
            props.update({f"damage_{k}": round(float(v), 4) for k, v in vals.items()})
            counts[cls] += 1
            area_ha[cls] += area
        out_features.append({"type": "Feature", "geometry": fp.geometry_wgs84, "properties": props})

    scored = [s for s, v in zip(scores, values, strict=True) if v is not None]
    notes = _notes(resampled, reference, len(features) - len(inside), buffer_m)
    unscored = len(inside) - len(scored)
    if unscored:
        notes.append(f"{unscored} footprint(s) under {MIN_PIXELS} valid pixels were not scored.")
    quicklook = _write_damage_quicklook(dest.with_suffix(".png"), post, inside, classes)
    write_geojson(
        dest,
        out_features,
        properties={"tool": "building_damage", "classes": list(DAMAGE_CLASSES), "notes": notes},
    )
    return DamageResult(
        buildings_total=len(features),
        buildings_in_scene=len(inside),
        buildings_outside=len(features) - len(inside),
        buildings_scored=len(scored),
        buildings_unscored=unscored,
        counts=counts,
        area_ha={k: round(v, 4) for k, v in area_ha.items()},
        mean_score=round(float(np.mean(scored)), 4) if scored else None,
        output=str(dest),
        quicklook=str(quicklook),
        notes=notes,
    )


def damage_class(score: float) -> DamageClass:
    """The xView2 class of a damage score (limits explained at CLASS_LIMITS)."""
    index = int(np.searchsorted(CLASS_LIMITS, score, side="right"))
    return DAMAGE_CLASSES[index]


# -- footprints -----------------------------------------------------------------


def _footprints_in_scene(
    features: list[dict[str, Any]], source: CRS, grid: Grid
) -> list[Footprint]:
    if grid.crs is None:
        raise InputFileError(
            "The post scene has no CRS, so footprints cannot be placed on it; "
            "use georeferenced imagery."
        )
    scene_box = box(*grid.bounds)
    inverse = ~grid.transform
    wgs84 = "OGC:CRS84"
    inside: list[Footprint] = []
    for feature in features:
        geometry = feature["geometry"]
        try:
            on_grid = rasterio.warp.transform_geom(source, grid.crs, geometry)
            geom_wgs84 = (
                geometry
                if source.to_string() == wgs84
                else (rasterio.warp.transform_geom(source, wgs84, geometry))
            )
            polygon = shape(on_grid)
        except Exception:  # one broken outline should not sink the others
            continue
        if polygon.is_empty or not polygon.intersects(scene_box):
            continue
        x0, y0, x1, y1 = polygon.bounds
        cols, rows = zip(*(inverse * (x, y) for x in (x0, x1) for y in (y0, y1)), strict=True)
        c0, r0 = max(math.floor(min(cols)), 0), max(math.floor(min(rows)), 0)
        c1, r1 = min(math.ceil(max(cols)), grid.width), min(math.ceil(max(rows)), grid.height)
        if c1 <= c0 or r1 <= r0:
            continue
        window = Window(c0, r0, c1 - c0, r1 - r0)
        inside.append(Footprint(feature, geom_wgs84, on_grid, window))
    return inside


def _buffer_pixels(grid: Grid, buffer_m: float) -> int:
    if buffer_m <= 0:
        return 0
    centre = Window(0, grid.height // 2, grid.width, 1)
    area = grid.pixel_area_m2(centre)
    pixel_m = math.sqrt(float(np.mean(area))) if area is not None else 1.0
    return max(1, round(buffer_m / pixel_m))


def _geodesic_area_ha(geometry: dict[str, Any]) -> float:
    return abs(_GEOD.geometry_area_perimeter(shape(geometry))[0]) / 1e4


# -- radiometry -----------------------------------------------------------------


def _common_bands(pre: Scene, post: Scene) -> list[str]:
    rgb = [b for b in ("red", "green", "blue") if pre.has(b) and post.has(b)]
    bands = rgb or [b for b in post.band_names if pre.has(b)]
    if not bands:
        raise ArgumentError(
            f"pre ({', '.join(pre.band_names)}) and post ({', '.join(post.band_names)}) share "
            "no band; map bands so both scenes name the same ones (e.g. red, green, blue)."
        )
    return bands


def _radiometric_matching(
    pre: Scene, post: Scene, bands: list[str]
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float]:
    """Per band, the quantiles of pre and post over pixels valid in both: mapping pre
    through them is histogram matching (the same as skimage's match_histograms), done
    from a sample so memory stays flat on large scenes."""
    samples: dict[str, list[np.ndarray]] = {b: [] for b in bands}
    n_pixels = post.grid.width * post.grid.height
    step = max(1, int(math.sqrt(n_pixels / SAMPLE_PIXELS)))
    for window in post.windows():
        a, b = pre.read(bands, window), post.read(bands, window)
        valid = np.logical_and.reduce([np.isfinite(a[n]) & np.isfinite(b[n]) for n in bands])
        thin = np.zeros_like(valid)
        thin[::step, ::step] = valid[::step, ::step]
        for n in bands:
            samples[n].append(np.stack([a[n][thin], b[n][thin]]))
    maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    spans = []
    for n in bands:
        pairs = np.concatenate(samples[n], axis=1)
        if pairs.shape[1] < 100:
            raise EmptyResultError(
                "pre and post share almost no valid pixels; check that they cover the same area."
            )
        maps[n] = (np.quantile(pairs[0], QUANTILES), np.quantile(pairs[1], QUANTILES))
        lo, hi = np.quantile(pairs[1], [0.01, 0.99])
        spans.append(hi - lo)
    return maps, float(max(np.mean(spans), 1e-6))


def _matched(values: np.ndarray, quantiles: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    q_pre, q_post = quantiles
    # np.interp needs increasing x; flat runs (saturated values) keep their first target.
    q_pre_unique, first = np.unique(q_pre, return_index=True)
    return np.interp(values, q_pre_unique, q_post[first]).astype(np.float32)


# -- per-building features --------------------------------------------------------


def _building_features(
    pre: Scene,
    post: Scene,
    bands: list[str],
    quantile_maps: dict[str, tuple[np.ndarray, np.ndarray]],
    data_range: float,
    fp: Footprint,
    ring_px: int,
) -> dict[str, float] | None:
    grid = post.grid
    pad = HALO_PX + ring_px
    c0, r0 = max(int(fp.window.col_off) - pad, 0), max(int(fp.window.row_off) - pad, 0)
    c1 = min(int(fp.window.col_off + fp.window.width) + pad, grid.width)
    r1 = min(int(fp.window.row_off + fp.window.height) + pad, grid.height)
    window = Window(c0, r0, c1 - c0, r1 - r0)
    zone = rasterio.features.rasterize(
        [(fp.geometry_grid, 1)],
        out_shape=(r1 - r0, c1 - c0),
        transform=grid.window_transform(window),
        dtype="uint8",
    ).astype(bool)
    a, b = pre.read(bands, window), post.read(bands, window)
    valid = np.logical_and.reduce([np.isfinite(a[n]) & np.isfinite(b[n]) for n in bands])
    # Too small is judged on the building itself: a ring of lawn does not make a shed
    # big enough to score.
    if np.count_nonzero(zone & valid) < MIN_PIXELS:
        return None
    if ring_px:
        zone = ndi.binary_dilation(zone, iterations=ring_px)
    zone &= valid
    # Fill invalid pixels with the band median so filters do not smear NaN into the zone.
    matched = np.stack([_matched(a[n], quantile_maps[n]) for n in bands]) / data_range
    raw = np.stack([b[n] for n in bands]) / data_range
    before = _smooth(matched, valid, SMOOTH_SIGMA_PX)
    after = _smooth(raw, valid, SMOOTH_SIGMA_PX)
    gray_before, gray_after = before.mean(axis=0), after.mean(axis=0)
    _, ssim = structural_similarity(
        gray_before,
        gray_after,
        data_range=1.0,
        full=True,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    # Texture at full resolution: debris is the finest detail there is.
    fine_before = _smooth(matched, valid, TEXTURE_SIGMA_PX).mean(axis=0)
    fine_after = _smooth(raw, valid, TEXTURE_SIGMA_PX).mean(axis=0)
    grad_before, grad_after = _gradient(fine_before), _gradient(fine_after)
    # Log ratio of edge density: roofs are smooth planes, rubble is high-frequency clutter;
    # +0.02 keeps bare, flat surfaces (a near-zero gradient) from blowing the ratio up.
    texture = math.log((grad_after[zone].mean() + 0.02) / (grad_before[zone].mean() + 0.02))
    colour = np.sqrt(((after - before) ** 2).sum(axis=0))
    return {
        "dissimilarity": float(1.0 - ssim[zone].mean()),
        "texture_change": texture,
        "colour_change": float(colour[zone].mean()),
        "debris": float(_debris_texture(fine_after, grad_after)[zone].mean()),
    }


def _smooth(values: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Bands (bands, rows, cols) with invalid pixels filled by the band median, then
    Gaussian-smoothed within each band."""
    filled = np.empty(values.shape, dtype=np.float32)
    for i, band in enumerate(values):
        fill = float(np.median(band[valid])) if valid.any() else 0.0
        filled[i] = np.where(valid, band, fill)
    if sigma <= 0:
        return filled
    return ndi.gaussian_filter(filled, (0, sigma, sigma))


def _gradient(gray: np.ndarray) -> np.ndarray:
    # Sobel sums 4 differences with weights 1-2-1; /8 gives the gradient per pixel.
    return np.hypot(ndi.sobel(gray, axis=0), ndi.sobel(gray, axis=1)) / 8.0


def _debris_texture(gray: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """Gradient magnitude weighted by how *incoherent* local orientations are.

    An intact roof's edges (ridge, eaves, panel seams) run in one or two directions, so
    the structure tensor is anisotropic (coherence near 1); a debris field has strong
    gradients pointing every way (coherence near 0).
    """
    l1, l2 = structure_tensor_eigenvalues(structure_tensor(gray, sigma=1.5, order="rc"))
    coherence = (l1 - l2) / np.maximum(l1 + l2, 1e-12)
    return gradient * (1.0 - coherence)


# -- scoring ------------------------------------------------------------------------


def _damage_scores(
    table: dict[str, np.ndarray],
) -> tuple[np.ndarray, dict[str, tuple[float, float]]]:
    """Scores in [0, 1] and, per feature, the (reference, spread) it was measured from."""
    scored = np.isfinite(table["dissimilarity"])
    evidence = np.zeros(len(scored))
    reference: dict[str, tuple[float, float]] = {}
    for name, weight in WEIGHTS.items():
        values = table[name]
        ref, spread = _unchanged_reference(values[scored], name)
        reference[name] = (ref, spread)
        z = (values - ref) / spread
        # Only change *towards* damage counts; a building less textured than its
        # reference is just a smooth roof, not negative damage.
        evidence += weight * np.clip(np.nan_to_num(z) / Z_FULL, 0.0, 1.0)
    return np.where(scored, evidence / sum(WEIGHTS.values()), np.nan), reference


def _unchanged_reference(values: np.ndarray, name: str) -> tuple[float, float]:
    """What an unchanged building looks like in this scene, and the noise around it.

    Reference: the REFERENCE_QUANTILE-th percentile of the scene's buildings (the least
    changed quarter stands for "unchanged" across this pair's sensors and seasons),
    capped by REFERENCE_CAP. Spread: the one-sided median absolute deviation of the
    buildings below the reference (x1.4826, as for a normal distribution), so that
    damaged buildings never widen it even when they are three quarters of the scene.
    """
    if values.size == 0:
        return 0.0, SPREAD_FLOOR[name]
    ref = float(np.percentile(values, REFERENCE_QUANTILE))
    if name in REFERENCE_CAP:
        ref = min(ref, REFERENCE_CAP[name])
    lower = values[values <= ref]
    spread = 1.4826 * float(np.median(ref - lower)) if lower.size else 0.0
    return ref, max(spread, SPREAD_FLOOR[name])


# -- outputs ------------------------------------------------------------------------


def _output_path(out: str | Path | None, post: Scene) -> Path:
    if out is None:
        return Path.cwd() / "results" / f"building_damage_{Path(post.source).stem}.geojson"
    path = Path(out)
    if path.suffix.lower() not in (".geojson", ".json"):
        raise ArgumentError(f"Output {path} must end in .geojson: building damage is vector data.")
    return path


def _write_damage_quicklook(
    dest: Path, post: Scene, inside: list[Footprint], classes: list[str]
) -> Path:
    grid = preview_grid(post.grid)
    background = scene_rgb(post, grid)
    outlines = []
    for cls, colour in CLASS_COLOURS.items():
        # Rasterizing each outline as a line keeps neighbours of one class separate and
        # costs one pass per class, however many buildings there are.
        rings = [
            mapping(shape(fp.geometry_grid).boundary)
            for fp, c in zip(inside, classes, strict=True)
            if c == cls
        ]
        if rings:
            edges = rasterio.features.rasterize(
                rings,
                out_shape=grid.shape,
                transform=grid.transform,
                dtype="uint8",
                all_touched=True,
            ).astype(bool)
            outlines.append((ndi.binary_dilation(edges), colour))
    # write_quicklook draws a mask's boundary; a 2 px line has all its pixels on it.
    write_quicklook(dest, background, outlines=outlines)
    return dest


def _bounds_text(grid: Grid) -> str:
    west, south, east, north = grid.bounds
    return f"bounds {west:.6g}, {south:.6g}, {east:.6g}, {north:.6g} in {grid.crs}"


def _notes(
    resampled: bool,
    reference: dict[str, tuple[float, float]],
    outside: int,
    buffer_m: float,
) -> list[str]:
    refs = ", ".join(f"{k} {r:.3g}±{s:.2g}" for k, (r, s) in reference.items())
    notes = [
        "Damage scores are relative to the least-changed quarter of this scene's buildings "
        "(histogram-matched pre, robust z-scores); they are not calibrated against labels, "
        "so compare classes within a scene rather than across events.",
        f"Unchanged reference (value±spread): {refs}.",
        "Footprints newer than the event may outline buildings rebuilt after it, and "
        "buildings destroyed and never rebuilt may have no footprint at all.",
    ]
    if outside:
        notes.append(f"{outside} footprint(s) outside the scene were skipped.")
    if buffer_m > 0:
        notes.append(f"Each footprint was widened by a {buffer_m:g} m ring to catch nearby debris.")
    if resampled:
        notes.append("pre was resampled onto post's grid (bilinear).")
    return notes
