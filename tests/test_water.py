"""water_mask and flood_map: the real Spain 2019 flood chips (Sentinel-2 L1C and
Sentinel-1, one grid) end to end, and small generated rasters with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from pyproj import Geod

from tests.conftest import write_tif
from tools.errors import ArgumentError, BandError, EmptyResultError, GridMismatchError
from tools.raster import open_scene
from tools.water import clean_mask, flood_map, water_mask

# The chip lies in the Vega Baja del Segura during the Sept 2019 DANA flood, one of the
# largest in the region's record; in the false-colour composite roughly a quarter to a third
# of the chip is open, shallow or turbid water. Bounds leave room for threshold choices
# but catch a method that finds (almost) nothing or floods the whole chip.
PLAUSIBLE = {"optical": (0.20, 0.40), "sar": (0.12, 0.32), "fusion": (0.20, 0.40)}


@pytest.fixture(scope="module")
def spain(request: pytest.FixtureRequest) -> dict[str, object]:
    from tests.conftest import sample

    return {
        "s2": open_scene(sample("sentinel2/spain_flood_2019_s2_l1c.tif")),
        "s1": open_scene(sample("sar/spain_flood_2019_s1.tif")),
    }


def _geodesic_area_ha(mask: np.ndarray, transform: Affine) -> float:
    """Independent area: every row's cell as a geodesic polygon on WGS84 (pyproj.Geod)."""
    geod = Geod(ellps="WGS84")
    total = 0.0
    for row in np.flatnonzero(mask.any(axis=1)):
        x0, y0 = transform * (0, row)
        x1, y1 = transform * (1, row + 1)
        cell, _ = geod.polygon_area_perimeter([x0, x1, x1, x0], [y0, y0, y1, y1])
        total += abs(cell) * np.count_nonzero(mask[row])
    return total / 1e4


@pytest.mark.parametrize("which", ["optical", "sar", "fusion"])
def test_spain_water_end_to_end(spain: dict, which: str, tmp_path: Path) -> None:
    scenes = {"optical": [spain["s2"]], "sar": [spain["s1"]], "fusion": [spain["s2"], spain["s1"]]}
    out = tmp_path / f"water_{which}.tif"
    result = water_mask(scenes[which], out)  # method="auto"

    assert result.method == which
    low, high = PLAUSIBLE[which]
    assert low <= result.water_fraction <= high
    with rasterio.open(out) as src:
        classes = src.read(1)
        assert src.crs == spain["s2"].grid.crs
        assert src.transform.almost_equals(spain["s2"].grid.transform)
        assert src.nodata == 255
    water = classes == 1
    assert set(np.unique(classes)) <= {0, 1, 255}
    assert result.water_pixels == int(water.sum())
    assert result.valid_pixels == int((classes != 255).sum())
    assert result.water_fraction == pytest.approx(water.sum() / (classes != 255).sum(), abs=1e-6)
    # Area from the per-row geodesic cell polygons, independent of Grid.pixel_area_m2.
    assert result.water_area_ha == pytest.approx(_geodesic_area_ha(water, src.transform), rel=5e-3)

    features = json.loads(Path(result.geojson).read_text())["features"]
    assert features and {f["properties"]["class"] for f in features} == {"water"}
    polygon_ha = sum(f["properties"]["area_ha"] for f in features)
    assert polygon_ha == pytest.approx(result.water_area_ha, rel=5e-3)
    with Image.open(result.quicklook) as png:
        assert png.size == (512, 512)
    assert Path(result.output) == out


def test_fusion_is_the_auto_choice_and_reports_every_threshold(spain: dict) -> None:
    result = water_mask([spain["s1"], spain["s2"]])
    assert result.method == "fusion"
    assert set(result.thresholds) == {"mndwi", "vv_db", "vh_db"}
    # Thresholds stay inside the published ranges for open water.
    assert -20 <= result.thresholds["vv_db"] <= -15
    assert -26 <= result.thresholds["vh_db"] <= -20
    assert result.output is None and result.geojson is None


def test_windowed_equals_whole(spain: dict, tmp_path: Path) -> None:
    scenes = [spain["s2"], spain["s1"]]
    whole = water_mask(scenes, tmp_path / "whole.tif")
    # 7-row strips: smaller than the halo, so every strip leans on its neighbours' rows.
    strips = water_mask(scenes, tmp_path / "strips.tif", max_pixels=512 * 7)
    with rasterio.open(whole.output) as a, rasterio.open(strips.output) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
    assert strips.water_area_ha == pytest.approx(whole.water_area_ha, rel=1e-9)
    assert strips.thresholds == whole.thresholds


def test_clean_mask_removes_specks_and_fills_pinholes() -> None:
    water = np.zeros((40, 40), dtype=bool)
    water[5:30, 5:30] = True
    water[15, 15] = False  # pinhole
    water[35, 35] = True  # speck
    cleaned = clean_mask(water, np.ones_like(water), min_pixels=4)
    assert cleaned[15, 15] and not cleaned[35, 35]
    assert cleaned.sum() == 25 * 25


# -- generated rasters with known answers ---------------------------------------------

# EPSG:6933 (EASE-Grid 2.0, cylindrical equal-area) has an areal scale factor of exactly
# 1, so a 10 m pixel is 100 m² of ground and the expected areas are exact.
EQUAL_AREA = "EPSG:6933"
GRID = Affine(10, 0, 100_000, 0, -10, 4_000_000)
H, W = 60, 80
WATER_PX = np.array([0.08, 0.03, 0.02], dtype=np.float32)  # green, nir, swir1: MNDWI 0.6
LAND_PX = np.array([0.10, 0.30, 0.20], dtype=np.float32)  # MNDWI -0.33


def _river(path: Path, cols: slice, transform: Affine = GRID) -> Path:
    bands = np.broadcast_to(LAND_PX[:, None, None], (3, H, W)).copy()
    bands[:, :, cols] = WATER_PX[:, None, None]
    return write_tif(
        path, bands, crs=EQUAL_AREA, transform=transform, descriptions=["green", "nir", "swir1"]
    )


def test_flood_map_separates_permanent_water_with_exact_areas(tmp_path: Path) -> None:
    pre = open_scene(_river(tmp_path / "pre.tif", slice(30, 36)))  # 6 px wide river
    post = open_scene(_river(tmp_path / "post.tif", slice(25, 45)))  # 20 px wide flood
    result = flood_map([post], [pre], tmp_path / "flood.tif")

    px_ha = 100 / 1e4
    assert result.permanent_water_ha == pytest.approx(6 * H * px_ha, rel=1e-6)
    assert result.flooded_area_ha == pytest.approx(14 * H * px_ha, rel=1e-6)
    assert result.water_area_ha == pytest.approx(20 * H * px_ha, rel=1e-6)
    assert result.water_fraction == pytest.approx(20 / W)
    with rasterio.open(result.output) as src:
        classes = src.read(1)
    assert (classes[:, 30:36] == 1).all() and (classes[:, 25:30] == 2).all()
    assert (classes[:, :25] == 0).all() and (classes[:, 45:] == 0).all()
    labels = {
        f["properties"]["class"] for f in json.loads(Path(result.geojson).read_text())["features"]
    }
    assert labels == {"flood", "permanent water"}
    assert Path(result.quicklook).exists()


def test_flood_map_without_pre_reports_all_water_as_flooded(tmp_path: Path) -> None:
    post = open_scene(_river(tmp_path / "post.tif", slice(25, 45)))
    result = flood_map([post])
    assert result.flooded_area_ha == pytest.approx(20 * H * 100 / 1e4, rel=1e-6)
    assert result.permanent_water_ha is None
    assert any("permanent water could not be separated" in note for note in result.notes)


def test_flood_map_grid_mismatch_needs_align(tmp_path: Path) -> None:
    shifted = Affine(10, 0, 100_050, 0, -10, 4_000_000)  # 5 px east
    pre = open_scene(_river(tmp_path / "pre.tif", slice(25, 31), transform=shifted))
    post = open_scene(_river(tmp_path / "post.tif", slice(25, 45)))
    with pytest.raises(GridMismatchError, match="align"):
        flood_map([post], [pre])
    result = flood_map([post], [pre], align=True)
    # The pre river sits at columns 30..36 of the post grid once aligned.
    assert result.permanent_water_ha == pytest.approx(6 * H * 100 / 1e4, rel=1e-6)
    assert any("not on pre" in note for note in result.notes)  # pre does not cover 5 columns


def test_rgb_scene_has_no_water_bands(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(1, 255, (3, 20, 20), dtype=np.uint8)
    scene = open_scene(write_tif(tmp_path / "rgb.tif", rgb, descriptions=["red", "green", "blue"]))
    with pytest.raises(BandError, match="swir1 or nir"):
        water_mask([scene])


def test_all_nodata_scene_is_an_empty_result(tmp_path: Path) -> None:
    empty = np.full((3, 20, 20), np.nan, dtype=np.float32)
    scene = open_scene(
        write_tif(
            tmp_path / "nan.tif", empty, nodata=float("nan"), descriptions=["green", "nir", "swir1"]
        )
    )
    with pytest.raises(EmptyResultError):
        water_mask([scene], tmp_path / "nan_water.tif")
    assert not (tmp_path / "nan_water.tif").exists()


def test_bad_method_and_output_are_argument_errors(tmp_path: Path) -> None:
    scene = open_scene(_river(tmp_path / "post.tif", slice(25, 45)))
    with pytest.raises(BandError, match="SAR"):
        water_mask([scene], method="sar")
    with pytest.raises(ArgumentError, match=".tif"):
        water_mask([scene], tmp_path / "water.png")
