"""Robustness of the mapping tools to the degradations `synthesize_image` simulates:
the Spain flood scene with sensor noise, band misregistration and light haze should
give nearly the same water map as the clean scene; thick cloud must not be called water."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from tools.raster import open_scene
from tools.synthesis import AugmentParams, augment_scene
from tools.water import water_mask


def _water(path: Path, out: Path) -> np.ndarray:
    water_mask([open_scene(path)], out, method="optical")
    with rasterio.open(out) as ds:
        return ds.read(1) == 1


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize(
    ("kinds", "params", "floor"),
    [
        (["noise"], AugmentParams(snr=50), 0.93),
        (["misregistration"], AugmentParams(max_shift_px=0.5), 0.88),
        (["haze"], AugmentParams(haze_strength=0.1), 0.85),
    ],
)
def test_water_map_survives_degradation(spain_s2, tmp_path, kinds, params, floor) -> None:
    clean = _water(spain_s2, tmp_path / "clean.tif")
    degraded = augment_scene(
        open_scene(spain_s2), kinds, tmp_path / "aug.tif", params=params, seed=3, quicklook=False
    )
    assert Path(degraded.output).exists()
    found = _water(tmp_path / "aug.tif", tmp_path / "aug_water.tif")
    assert _iou(clean, found) >= floor


def test_thick_cloud_is_not_water(spain_s2, tmp_path) -> None:
    params = AugmentParams(cloud_cover=0.3)
    result = augment_scene(
        open_scene(spain_s2),
        ["clouds"],
        tmp_path / "cloudy.tif",
        params=params,
        seed=5,
        quicklook=False,
    )
    clean = _water(spain_s2, tmp_path / "clean.tif")
    cloudy = _water(tmp_path / "cloudy.tif", tmp_path / "cloudy_water.tif")
    # water may be hidden by cloud, but cloud must not be reported as new water
    assert (cloudy & ~clean).sum() <= 0.02 * clean.sum()
    assert result.applied
