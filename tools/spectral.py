"""Spectral indices from the spyndex catalogue (Awesome Spectral Indices), on any scene.

An index's formula is evaluated with numpy on float32 windows of the scene, so memory
stays flat however large the scene: statistics are accumulated exactly (count, mean,
standard deviation, extremes) in float64 as the windows stream past, percentiles come
from a fixed-size systematic sample of the pixels, and the raster, when asked for, is
written window by window.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import CodeType
from typing import Any

import numpy as np
import spyndex
from pydantic import BaseModel, Field
from rasterio.windows import Window

from tools.errors import ArgumentError, BandError, EmptyResultError
from tools.raster import DEFAULT_WINDOW_PIXELS, Scene
from tools.sensors import SPYNDEX_CODE

TOOL_NAME = "spectral_index"
TOOL_DESCRIPTION = (
    "Compute any spectral index of the spyndex catalogue (NDVI, NDWI, MNDWI, NBR, EVI, SAVI, "
    "NDBI, ... 280 in all) on a loaded scene. Returns the index's full name and formula, "
    "which scene band fed each formula term, mean, min, max, std and percentiles of the "
    "valid pixels, and the path of the index raster when an output is requested."
)

# Percentiles are taken from at most this many systematically sampled pixels: exact for
# scenes up to ~1 Mpx, and within a few 1e-3 of the exact value for larger ones.
PERCENTILE_SAMPLE_SIZE = 1_048_576
PERCENTILES = (2, 25, 50, 75, 98)

_CODE_TO_NAME: dict[str, str] = {code: name for name, code in SPYNDEX_CODE.items()}
# spyndex's generic thermal band "T" (used by NBRT, NDVIT, EBBI...) is fed by the first
# thermal band when a scene has no band called just "thermal".
_CODE_FALLBACK: dict[str, tuple[str, ...]] = {"T": ("thermal1",)}
# Central-wavelength constants are a property of the sensor's band, not a free choice.
_WAVELENGTH_CONSTANT: dict[str, str] = {
    "lambdaG": "green",
    "lambdaN": "nir",
    "lambdaN2": "nir08",
    "lambdaR": "red",
    "lambdaS1": "swir1",
    "lambdaS2": "swir2",
}
_KERNEL_PREFIX = "k"


class SpectralIndexArgs(BaseModel):
    """Arguments of the `spectral_index` tool as a model or a user writes them."""

    scene: str = Field(description="Handle of a loaded scene (e.g. 'post') or a raster path.")
    index: str = Field(description="spyndex short name, case-insensitive: NDVI, NDWI, NBR, EVI...")
    out: str | None = Field(default=None, description="GeoTIFF path for the index raster.")
    constants: dict[str, float] | None = Field(
        default=None, description="Override index constants, e.g. {'L': 0.5} for SAVI."
    )


class BandSource(BaseModel):
    """Which scene band fed one band term of the formula."""

    code: str = Field(description="spyndex band code in the formula (N, R, S1...).")
    band: str = Field(description="Common name of the scene band (nir, red, swir1...).")
    band_id: str | None = Field(default=None, description="The sensor's own id (B8, SR_B5...).")
    units: str = Field(default="reflectance")


class IndexResult(BaseModel):
    """Statistics (and optionally the raster) of one spectral index over a scene."""

    index: str
    long_name: str
    formula: str
    application_domain: str
    reference: str
    bands: list[BandSource]
    constants: dict[str, float] = Field(default_factory=dict)
    mean: float
    min: float
    max: float
    std: float
    percentiles: dict[str, float]
    valid_pixels: int
    total_pixels: int
    valid_fraction: float
    units: str = "dimensionless"
    output: str | None = None
    notes: list[str] = Field(default_factory=list)


# -- the catalogue ------------------------------------------------------------------


@lru_cache(maxsize=1)
def _names_by_lower() -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for name in spyndex.indices:
        table.setdefault(name.lower(), []).append(name)
    return table


def resolve_index_name(name: str) -> str:
    """The catalogue's spelling of an index name; exact case wins, then any case."""
    wanted = name.strip()
    if wanted in spyndex.indices:
        return wanted
    matches = _names_by_lower().get(wanted.lower(), [])
    if len(matches) == 1:
        return matches[0]
    if matches:
        options = ", ".join(f"{m} ({spyndex.indices[m].long_name})" for m in matches)
        raise ArgumentError(f"Index name '{name}' is ambiguous: {options}; give the exact case.")
    close = difflib.get_close_matches(wanted.lower(), list(_names_by_lower()), n=4, cutoff=0.6)
    suggestions = [s for lower in close for s in _names_by_lower()[lower]]
    hint = f"did you mean {', '.join(suggestions)}?" if suggestions else "no close match;"
    raise ArgumentError(
        f"Unknown spectral index '{name}': {hint} See list_indices() for the "
        f"{len(spyndex.indices)} indices of the spyndex catalogue."
    )


def _is_constant(term: str) -> bool:
    return term in spyndex.constants


def _band_terms(index: Any) -> list[str]:
    return [t for t in index.bands if not _is_constant(t)]


def _constant_terms(index: Any) -> list[str]:
    return [t for t in index.bands if _is_constant(t)]


def _kernel_pairs(term: str) -> tuple[str, str] | None:
    """'kNR' -> ('N', 'R'): a kernel term k(a, b) of a kernel index (kNDVI, kEVI...)."""
    if not term.startswith(_KERNEL_PREFIX) or term in spyndex.bands:
        return None
    rest = term[1:]
    for split in range(1, len(rest)):
        a, b = rest[:split], rest[split:]
        if (a in spyndex.bands or _is_constant(a)) and (b in spyndex.bands or _is_constant(b)):
            return a, b
    return None


def index_info(name: str) -> dict[str, Any]:
    """Everything the catalogue says about one index: for answers that cite data."""
    key = resolve_index_name(name)
    index = spyndex.indices[key]
    band_codes: list[str] = []
    for term in _band_terms(index):
        pair = _kernel_pairs(term)
        for code in pair if pair else (term,):
            if not _is_constant(code) and code not in band_codes:
                band_codes.append(code)
    return {
        "index": key,
        "long_name": index.long_name,
        "formula": index.formula,
        "application_domain": index.application_domain,
        "bands": {
            code: {
                "name": spyndex.bands[code].long_name if code in spyndex.bands else code,
                "common_name": _CODE_TO_NAME.get(code),
            }
            for code in band_codes
        },
        "constants": {
            c: {
                "default": spyndex.constants[c].default,
                "description": spyndex.constants[c].description,
            }
            for c in _constant_terms(index)
        },
        "reference": index.reference,
        "platforms": list(index.platforms),
        "contributor": index.contributor,
        "date_of_addition": index.date_of_addition,
    }


def list_indices(domain: str | None = None) -> list[str]:
    """Index short names, optionally those of one application domain (vegetation,
    water, burn, urban, soil, snow, radar, clouds, kernel)."""
    names = sorted(spyndex.indices, key=str.lower)
    if domain is None:
        return names
    domains = sorted({i.application_domain for i in spyndex.indices.values()})
    if domain.lower() not in domains:
        raise ArgumentError(f"Unknown index domain '{domain}'; choose one of {', '.join(domains)}.")
    return [n for n in names if spyndex.indices[n].application_domain == domain.lower()]


# -- evaluation plan: which scene band feeds which term -----------------------------


@dataclass
class _Plan:
    key: str
    formula: CodeType
    sources: dict[str, str]  # band code -> scene band name
    constants: dict[str, float]
    kernels: dict[str, tuple[str, str]]  # kernel term -> (code or constant, code or constant)
    to_linear: set[str] = field(default_factory=set)  # SAR bands read in dB, fed as power
    # x**0 and kernels can turn a NaN input into a finite value: mask inputs explicitly.
    mask_inputs: bool = False
    notes: list[str] = field(default_factory=list)


def _scene_band_for(code: str, scene: Scene) -> str | None:
    name = _CODE_TO_NAME.get(code)
    if name is not None and name in scene.bands:
        return name
    return next((n for n in _CODE_FALLBACK.get(code, ()) if n in scene.bands), None)


def _plan(scene: Scene, key: str, constants: dict[str, float] | None) -> _Plan:
    index = spyndex.indices[key]
    notes: list[str] = []
    kernels: dict[str, tuple[str, str]] = {}
    band_codes: list[str] = []
    needed_constants = _constant_terms(index)
    for term in _band_terms(index):
        pair = _kernel_pairs(term)
        if pair is None:
            band_codes.append(term)
            continue
        kernels[term] = pair
        for part in pair:
            if _is_constant(part):
                needed_constants.append(part)
            elif part not in band_codes:
                band_codes.append(part)
    if kernels:
        needed_constants.append("sigma")
        notes.append("Kernel terms use an RBF kernel k(a,b) = exp(-(a-b)^2 / (2 sigma^2)).")

    sources: dict[str, str] = {}
    missing: list[str] = []
    for code in dict.fromkeys(band_codes):
        band = _scene_band_for(code, scene)
        if band is None:
            names = (_CODE_TO_NAME.get(code), *_CODE_FALLBACK.get(code, ()), code)
            missing.append(f"{next(n for n in names if n)} ({code})")
        else:
            sources[code] = band
    if missing:
        have = ", ".join(scene.bands) or "no named bands"
        raise BandError(
            f"{key} needs band(s) {', '.join(missing)} but {Path(scene.source).name} has {have}; "
            f"{key} = {index.formula}. Map bands with --bands (e.g. nir=4) or use a scene "
            "with them."
        )

    given = dict(constants or {})
    unknown = [c for c in given if c not in needed_constants]
    if unknown:
        uses = ", ".join(dict.fromkeys(needed_constants)) or "no constants"
        raise ArgumentError(f"{key} does not use constant(s) {', '.join(unknown)}; it uses {uses}.")
    values: dict[str, float] = {}
    for c in dict.fromkeys(needed_constants):
        if c in given:
            values[c] = float(given[c])
            continue
        wavelength = _sensor_wavelength(scene, c)
        if wavelength is not None:
            values[c] = wavelength
            continue
        default = spyndex.constants[c].default
        if default is None:
            raise ArgumentError(
                f"{key} needs constant {c} ({spyndex.constants[c].description}) which has no "
                f"default; pass it, e.g. constants={{'{c}': ...}}."
            )
        values[c] = float(default)
    if values:
        used = ", ".join(f"{c}={v:g}" for c, v in values.items())
        notes.append(f"Constants: {used}.")

    to_linear = {code for code, band in sources.items() if scene.bands[band].units == "dB"}
    if to_linear:
        # Radar indices in the catalogue are defined on backscatter power, not decibels.
        linear = ", ".join(sorted(to_linear))
        notes.append(f"SAR band(s) {linear} converted from dB to linear power.")
    if "T" in sources and sources["T"] != _CODE_TO_NAME.get("T"):
        notes.append(f"Thermal term T read from {sources['T']}.")
    if any(scene.bands[b].units == "DN" for b in sources.values()):
        notes.append(f"{key} computed on DN, not reflectance: values are approximate.")
    formula = compile(index.formula, f"<{key}>", "eval")
    mask_inputs = bool(kernels) or "**" in index.formula
    return _Plan(key, formula, sources, values, kernels, to_linear, mask_inputs, notes)


def _sensor_wavelength(scene: Scene, constant: str) -> float | None:
    band_name = _WAVELENGTH_CONSTANT.get(constant)
    if band_name is None or scene.sensor is None:
        return None
    spec = scene.sensor.band_by_name(band_name)
    return float(spec.wavelength_nm) if spec and spec.wavelength_nm else None


def _evaluate(plan: _Plan, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The index on one window, float32; non-finite where any input is invalid or the
    formula divides by zero."""
    params: dict[str, Any] = {}
    for code, band in plan.sources.items():
        data = arrays[band]
        if code in plan.to_linear:
            data = np.power(np.float32(10.0), data / np.float32(10.0), dtype=np.float32)
        params[code] = data
    params.update(plan.constants)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for term, (a, b) in plan.kernels.items():
            sigma = plan.constants["sigma"]
            diff = np.asarray(params[a], dtype=np.float32) - np.float32(params[b])
            params[term] = np.exp(-(diff * diff) / np.float32(2 * sigma * sigma))
        result = eval(plan.formula, {"__builtins__": {}}, params)  # noqa: S307 - catalogue formula
        result = np.asarray(result, dtype=np.float32)
        if result.shape != next(iter(arrays.values())).shape:
            result = np.broadcast_to(result, next(iter(arrays.values())).shape).copy()
    return result


# -- streaming statistics ------------------------------------------------------------


class _RunningStats:
    """Exact count, mean, variance (Chan et al. pairwise merge), extremes; a systematic
    sample of every `stride`-th pixel for percentiles."""

    def __init__(self, total_pixels: int, width: int) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf
        stride = max(1, math.ceil(total_pixels / PERCENTILE_SAMPLE_SIZE))
        # A stride sharing a factor with the row width would sample the same columns on
        # every row; a coprime stride walks across all columns.
        while stride > 1 and math.gcd(stride, width) != 1:
            stride += 1
        self.stride = stride
        self.samples: list[np.ndarray] = []

    def add(self, values: np.ndarray, sample: np.ndarray) -> None:
        n = int(values.size)
        if n:
            # Sums in float64 (buffered casts, no float64 copy of the window); deviations
            # from the window's own mean keep the squares well conditioned.
            w_mean = float(np.sum(values, dtype=np.float64)) / n
            dev = values - np.float32(w_mean)
            w_m2 = float(np.sum(np.square(dev, out=dev), dtype=np.float64))
            total = self.count + n
            delta = w_mean - self.mean
            self.mean += delta * n / total
            self.m2 += w_m2 + delta * delta * self.count * n / total
            self.count = total
            self.min = min(self.min, float(values.min()))
            self.max = max(self.max, float(values.max()))
        if sample.size:
            self.samples.append(sample)

    def percentiles(self) -> dict[str, float]:
        sample = np.concatenate(self.samples) if self.samples else np.empty(0, np.float32)
        if sample.size == 0:  # a sparse valid set the stride missed: fall back to extremes
            return {f"p{p}": (self.min if p < 50 else self.max) for p in PERCENTILES}
        values = np.percentile(sample.astype(np.float64), PERCENTILES)
        return {f"p{p}": float(v) for p, v in zip(PERCENTILES, values, strict=True)}


def _index_windows(
    scene: Scene, plan: _Plan, stats: _RunningStats, max_pixels: int
) -> Iterator[tuple[Window, np.ndarray]]:
    """Yield (window, index with NaN where invalid), accumulating `stats` on the way."""
    bands = list(dict.fromkeys(plan.sources.values()))
    width = scene.grid.width
    for window in scene.windows(max_pixels):
        arrays = scene.read(bands, window)
        result = _evaluate(plan, arrays)
        valid = np.isfinite(result)
        if plan.mask_inputs:
            for data in arrays.values():
                valid &= np.isfinite(data)
        if not valid.all():
            result[~valid] = np.nan
        flat = result.reshape(-1)
        start = int(window.row_off) * width + int(window.col_off)
        first = (-start) % stats.stride
        sample = flat[first :: stats.stride]
        stats.add(flat[valid.reshape(-1)], sample[np.isfinite(sample)].copy())
        yield window, result


def spectral_index(
    scene: Scene,
    index: str,
    out: str | Path | None = None,
    constants: dict[str, float] | None = None,
    *,
    max_pixels: int = DEFAULT_WINDOW_PIXELS,
) -> IndexResult:
    """Compute `index` over `scene` window by window; statistics of the valid pixels,
    and a float32 GeoTIFF (NaN nodata) at `out` when given."""
    key = resolve_index_name(index)
    plan = _plan(scene, key, constants)
    total = scene.grid.width * scene.grid.height
    stats = _RunningStats(total, scene.grid.width)
    blocks = _index_windows(scene, plan, stats, max_pixels)
    output: str | None = None
    if out is not None:
        from tools.export import write_raster

        def checked() -> Iterator[tuple[Window, np.ndarray]]:
            yield from blocks
            # Raised inside the stream so the half-written file is discarded, not renamed.
            if stats.count == 0:
                raise _empty(scene, key)

        path = write_raster(
            out,
            scene.grid,
            checked(),
            dtype="float32",
            nodata=float("nan"),
            band_names=[key],
            tags={"index": key, "formula": spyndex.indices[key].formula},
        )
        output = str(path)
    else:
        for _ in blocks:
            pass
    if stats.count == 0:
        raise _empty(scene, key)
    meta = spyndex.indices[key]
    notes = list(dict.fromkeys([*scene.notes, *plan.notes]))
    if stats.stride > 1:
        notes.append(
            f"Percentiles estimated from a systematic sample of 1 in {stats.stride} pixels."
        )
    invalid = total - stats.count
    if invalid:
        notes.append(f"{invalid} of {total} pixels invalid (nodata, or formula undefined there).")
    return IndexResult(
        index=key,
        long_name=meta.long_name,
        formula=meta.formula,
        application_domain=meta.application_domain,
        reference=meta.reference,
        bands=[
            BandSource(
                code=code,
                band=band,
                band_id=scene.bands[band].band_id,
                units=scene.bands[band].units,
            )
            for code, band in plan.sources.items()
        ],
        constants=plan.constants,
        mean=stats.mean,
        min=stats.min,
        max=stats.max,
        std=math.sqrt(stats.m2 / stats.count),
        percentiles=stats.percentiles(),
        valid_pixels=stats.count,
        total_pixels=total,
        valid_fraction=stats.count / total,
        output=output,
        notes=notes,
    )


def _empty(scene: Scene, key: str) -> EmptyResultError:
    return EmptyResultError(
        f"{key} has no valid pixel in {Path(scene.source).name}: every pixel is nodata or the "
        "formula is undefined there; check the band mapping and nodata value, or use another scene."
    )


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a - b) / (a + b) as float32, NaN where undefined (a + b = 0, or a NaN input):
    the shape of NDVI, NDWI, MNDWI, NBR and their kin, for tools that need it raw."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (a - b) / (a + b)
    ratio[~np.isfinite(ratio)] = np.nan
    return ratio.astype(np.float32)
