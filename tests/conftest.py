"""Shared fixtures: the real sample data in ../shared/data, and small rasters made here."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EOAGENT_SAMPLE_DATA", REPO.parent / "shared" / "data"))


def sample(relative: str) -> Path:
    """Path of a file in the shared sample data, or skip the test with the reason."""
    path = DATA / relative
    if not path.exists():
        pytest.skip(f"sample data {relative} not found under {DATA} (set EOAGENT_SAMPLE_DATA)")
    return path


@pytest.fixture
def spain_s2() -> Path:
    return sample("sentinel2/spain_flood_2019_s2_l1c.tif")


@pytest.fixture
def spain_s1() -> Path:
    return sample("sar/spain_flood_2019_s1.tif")


def write_tif(
    path: Path,
    bands: np.ndarray,
    *,
    crs: str | None = "EPSG:32630",
    transform: Affine | None = None,
    descriptions: list[str] | None = None,
    nodata: float | None = None,
) -> Path:
    """Write a small GeoTIFF with a real CRS and transform."""
    bands = bands if bands.ndim == 3 else bands[np.newaxis]
    transform = transform or Affine(10, 0, 500000, 0, -10, 4200000)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=bands.shape[2],
        height=bands.shape[1],
        count=bands.shape[0],
        dtype=bands.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as out:
        out.write(bands)
        for i, d in enumerate(descriptions or [], start=1):
            out.set_band_description(i, d)
    return path
