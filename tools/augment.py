"""Physics-based image augmentation as plain numpy functions.

Arrays are (bands, rows, cols) float32 reflectance with NaN for invalid pixels. Every
function is deterministic for its seed. The random fields are defined on the whole
scene grid and evaluated at any window's pixel coordinates, so a scene processed window
by window gets exactly the same clouds and haze as one processed whole; only the noise
draws depend on the window split (each window seeds from its offset).

- haze: Koschmieder's model as used in dehazing (He et al. 2011), I = J t + A (1 - t),
  with a wavelength-dependent transmission t = exp(-tau(lambda)) and the Angstrom law
  tau(lambda) = tau550 (lambda / 550 nm)^-alpha (alpha ~1.3 for continental aerosol,
  Angstrom 1929): blue is lifted toward the airlight far more than SWIR, and contrast
  drops by t. tau varies smoothly over the scene (a low-frequency fractal field).
- clouds: a fractal (multi-octave value noise) field thresholded at the quantile that
  gives the requested cover, with soft edges. Cloud tops are bright and spectrally flat
  in the VNIR and darker in the SWIR, where liquid water and ice absorb (reflectance
  ~0.7 VNIR, ~0.5 at 1.6 um, ~0.35 at 2.2 um; e.g. Platnick et al. 2003, MODIS cloud
  optical properties). Shadows are the same mask displaced away from the sun by
  h / tan(elevation) and darken the ground to the diffuse-light share.
- noise: signal-dependent Gaussian noise, sigma^2 = (rho_ref / SNR)^2 (f x / rho_ref +
  1 - f): shot noise (Poisson, variance proportional to signal) plus a read-noise floor,
  scaled so that the SNR at the reference reflectance equals the requested SNR, which is
  how sensor SNR is specified (Sentinel-2 MSI: SNR at a reference radiance per band).
- coarsen: area-weighted averaging onto a coarser grid over the same bounds (what a
  detector integrating over a larger footprint records, ignoring its PSF).
- misregister: sub-pixel translation of each band (cubic spline interpolation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, sparse

# Centre wavelengths (nm) of the common band names, used when a scene's sensor does not
# give them (Sentinel-2 MSI values; Landsat bands are within ~20 nm of these).
WAVELENGTH_NM: dict[str, float] = {
    "coastal": 443, "blue": 490, "green": 560, "red": 665, "rededge1": 705,
    "rededge2": 740, "rededge3": 783, "nir": 842, "nir08": 865, "water_vapour": 945,
    "cirrus": 1375, "swir1": 1610, "swir2": 2190, "pan": 590,
}  # fmt: skip
# Cloud-top reflectance against wavelength (nm): flat and bright in the VNIR, lower in
# the water/ice absorption of the SWIR; the cirrus and water-vapour bands see the cloud
# above most of the absorbing vapour, so a cloud is bright there while the ground is not.
CLOUD_SPECTRUM_NM = np.array([400.0, 1000.0, 1375.0, 1610.0, 2190.0])
CLOUD_SPECTRUM = np.array([0.75, 0.72, 0.45, 0.52, 0.35])
HAZE_TAU550_PER_STRENGTH = 1.5  # strength 1 -> tau(550 nm) 1.5: thick haze or smoke
HAZE_AIRLIGHT = 0.3  # reflectance of an optically thick haze layer (whitish)
ANGSTROM_EXPONENT = 1.3
SHADOW_DIFFUSE = 0.35  # share of ground irradiance left in a full cloud shadow (skylight)
NOISE_REFERENCE = 0.1  # reflectance at which the SNR is specified
SHOT_FRACTION = 0.9  # share of the noise variance at the reference that is shot noise


@dataclass
class FractalField:
    """Multi-octave value noise on a scene grid: smooth, seeded, window-consistent.

    Lattice values are drawn once per octave for the whole grid (cells of `cell`,
    `cell/2`, ... pixels) and interpolated with a quintic fade, so any pixel's value
    depends only on the seed and its position. Values are roughly standard normal.
    """

    shape: tuple[int, int]
    seed: int
    cell: float = 128.0
    octaves: int = 5
    persistence: float = 0.55
    _lattices: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def _cell(self, octave: int) -> float:
        return max(self.cell / 2**octave, 3.0)

    def _lattice(self, octave: int) -> np.ndarray:
        if octave not in self._lattices:
            c = self._cell(octave)
            rows = int(math.ceil(self.shape[0] / c)) + 4
            cols = int(math.ceil(self.shape[1] / c)) + 4
            rng = np.random.default_rng([self.seed, octave, 7919])
            self._lattices[octave] = rng.standard_normal((rows, cols)).astype(np.float32)
        return self._lattices[octave]

    def sample(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Values on the outer grid of pixel-centre coordinates `rows` x `cols`
        (coordinates may lie outside the grid: the field extends smoothly)."""
        total = np.zeros((rows.size, cols.size), dtype=np.float32)
        norm = 0.0
        for octave in range(self.octaves):
            lattice = self._lattice(octave)
            c = self._cell(octave)
            amp = self.persistence**octave
            total += amp * _value_noise(lattice, rows / c + 2.0, cols / c + 2.0)
            norm += amp * amp
        # interpolation between iid nodes shrinks the variance; 0.6 brings it back near 1
        return total / np.float32(math.sqrt(norm) * 0.6)

    def window(
        self,
        row_off: int,
        col_off: int,
        height: int,
        width: int,
        shift: tuple[float, float] = (0, 0),
    ) -> np.ndarray:
        rows = np.arange(row_off, row_off + height, dtype=np.float64) + 0.5 - shift[0]
        cols = np.arange(col_off, col_off + width, dtype=np.float64) + 0.5 - shift[1]
        return self.sample(rows, cols)

    def quantile(self, q: float, points: int = 256) -> float:
        """The q-quantile of the field over the whole grid, from a regular sample."""
        rows = np.linspace(0.5, self.shape[0] - 0.5, min(points, self.shape[0]))
        cols = np.linspace(0.5, self.shape[1] - 0.5, min(points, self.shape[1]))
        return float(np.quantile(self.sample(rows, cols), q))


def _value_noise(lattice: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    iu = np.clip(np.floor(u).astype(np.int64), 0, lattice.shape[0] - 2)
    iv = np.clip(np.floor(v).astype(np.int64), 0, lattice.shape[1] - 2)
    fu = _fade(np.clip(u - iu, 0, 1)).astype(np.float32)[:, None]
    fv = _fade(np.clip(v - iv, 0, 1)).astype(np.float32)[None, :]
    a = lattice[np.ix_(iu, iv)]
    b = lattice[np.ix_(iu, iv + 1)]
    c = lattice[np.ix_(iu + 1, iv)]
    d = lattice[np.ix_(iu + 1, iv + 1)]
    top = a + (b - a) * fv
    bottom = c + (d - c) * fv
    return top + (bottom - top) * fu


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def _check(bands: np.ndarray, wavelengths_nm: Sequence[float | None] | None = None) -> None:
    if bands.ndim != 3:
        raise ValueError(f"bands must be (bands, rows, cols); got shape {bands.shape}")
    if wavelengths_nm is not None and len(wavelengths_nm) != bands.shape[0]:
        raise ValueError(f"{len(wavelengths_nm)} wavelengths for {bands.shape[0]} bands")


@dataclass(frozen=True)
class Placement:
    """Where a block lies on the full scene grid (for window-consistent fields)."""

    row_off: int = 0
    col_off: int = 0
    full_shape: tuple[int, int] | None = None

    def full(self, bands: np.ndarray) -> tuple[int, int]:
        return self.full_shape or (int(bands.shape[1]), int(bands.shape[2]))


# -- haze --------------------------------------------------------------------------


def haze_field(shape: tuple[int, int], seed: int) -> FractalField:
    return FractalField(shape, seed + 101, cell=max(shape) / 2, octaves=3, persistence=0.5)


def _absorbed_below_haze(wavelength_nm: float) -> bool:
    """The 1375 nm cirrus band sits in a strong water-vapour absorption: light from the
    boundary layer, where aerosol haze lives, never reaches the sensor there (which is
    why the band sees only high cirrus). Haze must leave it dark."""
    return 1340.0 <= wavelength_nm <= 1410.0


def add_haze(
    bands: np.ndarray,
    wavelengths_nm: Sequence[float | None],
    *,
    strength: float = 0.5,
    seed: int = 0,
    angstrom: float = ANGSTROM_EXPONENT,
    airlight: float = HAZE_AIRLIGHT,
    placement: Placement = Placement(),
    field_: FractalField | None = None,
) -> np.ndarray:
    """Haze of optical depth tau550 = 1.5 * strength, varying smoothly (+-30%) over the
    scene. Bands without a wavelength (None) are returned unchanged."""
    _check(bands, wavelengths_nm)
    tau550 = HAZE_TAU550_PER_STRENGTH * float(strength)
    f = field_ or haze_field(placement.full(bands), seed)
    rows, cols = bands.shape[1:]
    variation = np.exp(0.3 * f.window(placement.row_off, placement.col_off, rows, cols))
    out = bands.astype(np.float32, copy=True)
    for i, wl in enumerate(wavelengths_nm):
        if wl is None or _absorbed_below_haze(wl):
            continue
        t = np.exp(-tau550 * (wl / 550.0) ** -angstrom * variation).astype(np.float32)
        out[i] = bands[i] * t + np.float32(airlight) * (1 - t)
    return out


# -- clouds and their shadows ------------------------------------------------------


def cloud_reflectance(wavelength_nm: float) -> float:
    return float(np.interp(wavelength_nm, CLOUD_SPECTRUM_NM, CLOUD_SPECTRUM))


def shadow_offset_px(
    sun_azimuth_deg: float, sun_elevation_deg: float, cloud_height_m: float, pixel_size_m: float
) -> tuple[float, float]:
    """(rows, cols) from a cloud to its shadow on a north-up image: away from the sun,
    cloud_height / tan(elevation) metres on the ground."""
    if not 0 < sun_elevation_deg <= 90:
        raise ValueError(f"sun elevation must be in (0, 90] degrees; got {sun_elevation_deg}")
    length = cloud_height_m / math.tan(math.radians(sun_elevation_deg)) / pixel_size_m
    away = math.radians(sun_azimuth_deg + 180.0)
    return (-length * math.cos(away), length * math.sin(away))


def cloud_field(shape: tuple[int, int], seed: int) -> FractalField:
    return FractalField(shape, seed, cell=max(32.0, min(shape) / 3), octaves=5)


@dataclass
class CloudLayer:
    """A cloud layer on a scene grid: its field and the cut that gives the cover."""

    shape: tuple[int, int]
    cover: float
    seed: int = 0
    softness: float = 0.6  # field units over which opacity ramps from 0 to 1
    field_: FractalField = field(init=False)
    threshold: float = field(init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.cover <= 1:
            raise ValueError(f"cloud cover must be within 0-1; got {self.cover}")
        self.field_ = cloud_field(self.shape, self.seed)
        if self.cover <= 0:
            self.threshold = math.inf
        elif self.cover >= 1:
            self.threshold = -math.inf
        else:
            self.threshold = self.field_.quantile(1 - self.cover)

    def opacity(
        self,
        row_off: int,
        col_off: int,
        height: int,
        width: int,
        shift: tuple[float, float] = (0, 0),
    ) -> np.ndarray:
        values = self.field_.window(row_off, col_off, height, width, shift)
        if math.isinf(self.threshold):
            return np.full(values.shape, 0.0 if self.threshold > 0 else 1.0, np.float32)
        return np.clip((values - self.threshold) / self.softness, 0, 1).astype(np.float32)


def add_clouds(
    bands: np.ndarray,
    wavelengths_nm: Sequence[float | None],
    *,
    cover: float = 0.3,
    seed: int = 0,
    shadow_offset: tuple[float, float] | None = (20.0, -20.0),
    placement: Placement = Placement(),
    layer: CloudLayer | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bands, cloud opacity, shadow strength): clouds covering `cover` of the scene,
    and their shadows displaced by `shadow_offset` (rows, cols; see shadow_offset_px).
    Bands without a wavelength are left unchanged."""
    _check(bands, wavelengths_nm)
    layer = layer or CloudLayer(placement.full(bands), cover, seed)
    rows, cols = bands.shape[1:]
    r0, c0 = placement.row_off, placement.col_off
    alpha = layer.opacity(r0, c0, rows, cols)
    if shadow_offset is None:
        shade = np.zeros_like(alpha)
    else:
        shade = layer.opacity(r0, c0, rows, cols, shift=shadow_offset) * (1 - alpha)
    # brighter, thicker cores; a little texture from the opacity itself
    top = 0.75 + 0.25 * alpha
    darkening = 1 - (1 - SHADOW_DIFFUSE) * shade
    out = bands.astype(np.float32, copy=True)
    for i, wl in enumerate(wavelengths_nm):
        if wl is None:
            continue
        ground = bands[i] * darkening
        out[i] = ground * (1 - alpha) + alpha * np.float32(cloud_reflectance(wl)) * top
    return out, alpha, shade


# -- sensor noise ------------------------------------------------------------------


def noise_sigma(
    signal: np.ndarray, snr: float, reference: float = NOISE_REFERENCE, shot: float = SHOT_FRACTION
) -> np.ndarray:
    """Noise standard deviation at each signal level for an SNR specified at `reference`."""
    if snr <= 0:
        raise ValueError(f"SNR must be positive; got {snr}")
    base = (reference / snr) ** 2
    return np.sqrt(base * (shot * np.maximum(signal, 0) / reference + (1 - shot))).astype(
        np.float32
    )


def add_noise(
    bands: np.ndarray,
    snr: float | Sequence[float],
    *,
    seed: int = 0,
    reference: float = NOISE_REFERENCE,
    placement: Placement = Placement(),
) -> np.ndarray:
    """Signal-dependent sensor noise with SNR `snr` (one value, or one per band) at
    reflectance `reference`. NaN stays NaN."""
    _check(bands)
    snrs = [float(snr)] * bands.shape[0] if np.isscalar(snr) else [float(s) for s in snr]  # type: ignore[arg-type, union-attr]
    if len(snrs) != bands.shape[0]:
        raise ValueError(f"{len(snrs)} SNR values for {bands.shape[0]} bands")
    rng = np.random.default_rng([seed, placement.row_off, placement.col_off, 4242])
    out = bands.astype(np.float32, copy=True)
    for i, s in enumerate(snrs):
        draw = rng.standard_normal(bands.shape[1:], dtype=np.float32)
        out[i] = bands[i] + draw * noise_sigma(bands[i], s, reference)
    return out


# -- scale change ------------------------------------------------------------------


def coarser_size(width: int, height: int, factor: float) -> tuple[int, int]:
    if factor < 1:
        raise ValueError(f"scale factor must be >= 1 (coarser); got {factor}")
    return max(1, round(width / factor)), max(1, round(height / factor))


def area_weights(n_in: int, n_out: int) -> sparse.csr_matrix:
    """(n_out, n_in) overlap of each output cell with each input cell, over the same
    extent: rows sum to n_in / n_out (input pixels per output pixel)."""
    step = n_in / n_out
    rows, cols, vals = [], [], []
    for j in range(n_out):
        lo, hi = j * step, (j + 1) * step
        for i in range(int(math.floor(lo)), min(n_in, int(math.ceil(hi)))):
            overlap = min(hi, i + 1) - max(lo, i)
            if overlap > 1e-9:
                rows.append(j)
                cols.append(i)
                vals.append(overlap)
    return sparse.csr_matrix((vals, (rows, cols)), shape=(n_out, n_in), dtype=np.float64)


def coarsen(
    bands: np.ndarray,
    factor: float,
    *,
    row_weights: sparse.csr_matrix | None = None,
    col_weights: sparse.csr_matrix | None = None,
) -> np.ndarray:
    """Area-weighted average onto a grid `factor` times coarser over the same bounds;
    NaN pixels are left out of each average (all-NaN cells stay NaN)."""
    _check(bands)
    _, rows, cols = bands.shape
    width, height = coarser_size(cols, rows, factor)
    r = row_weights if row_weights is not None else area_weights(rows, height)
    c = col_weights if col_weights is not None else area_weights(cols, width)
    out = np.empty((bands.shape[0], r.shape[0], c.shape[0]), dtype=np.float32)
    for i, band in enumerate(bands):
        valid = np.isfinite(band)
        values = np.where(valid, band, 0).astype(np.float64)
        total = r @ values @ c.T
        weight = r @ valid.astype(np.float64) @ c.T
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i] = np.where(weight > 1e-9, total / np.maximum(weight, 1e-12), np.nan)
    return out


# -- band misregistration ----------------------------------------------------------


def random_band_shifts(
    n_bands: int, max_shift_px: float, seed: int = 0, reference: int | None = 0
) -> list[tuple[float, float]]:
    """Per-band (rows, cols) shifts of at most `max_shift_px` in each axis; the
    reference band (if any) stays put, as in a co-registration to one band."""
    rng = np.random.default_rng([seed, 5150])
    shifts = [
        (float(a), float(b)) for a, b in rng.uniform(-max_shift_px, max_shift_px, (n_bands, 2))
    ]
    if reference is not None and 0 <= reference < n_bands:
        shifts[reference] = (0.0, 0.0)
    return shifts


def misregister(bands: np.ndarray, shifts: Sequence[tuple[float, float]]) -> np.ndarray:
    """Move each band's content by its (rows, cols) shift (positive: down, right) with
    cubic-spline interpolation; pixels shifted in from outside repeat the edge."""
    _check(bands)
    if len(shifts) != bands.shape[0]:
        raise ValueError(f"{len(shifts)} shifts for {bands.shape[0]} bands")
    out = np.empty_like(bands, dtype=np.float32)
    for i, (band, shift) in enumerate(zip(bands, shifts, strict=True)):
        if shift == (0, 0) or shift == (0.0, 0.0):
            out[i] = band
            continue
        valid = np.isfinite(band)
        filled = np.where(valid, band, np.nanmedian(band) if valid.any() else 0).astype(np.float32)
        moved = ndimage.shift(filled, shift, order=3, mode="nearest")
        moved_valid = ndimage.shift(valid.astype(np.float32), shift, order=1, mode="nearest")
        out[i] = np.where(moved_valid > 0.5, moved, np.nan)
    return out
