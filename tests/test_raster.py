"""Scene opening, band naming, scaling, resampling and pixel areas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Geod
from rasterio.warp import Resampling, calculate_default_transform, reproject

from tests.conftest import sample, write_tif
from tools.errors import BandError, GridMismatchError, InputFileError
from tools.raster import Grid, check_same_grid, open_scene, pixel_to_map

GEOD = Geod(ellps="WGS84")


def _geod_pixel_area(grid: Grid, row: int, col: int) -> float:
    cols = np.array([col, col + 1, col + 1, col], dtype=float)
    rows = np.array([row, row, row + 1, row + 1], dtype=float)
    x, y = pixel_to_map(grid.transform, cols, rows)
    if not grid.crs.is_geographic:
        from pyproj import Transformer

        x, y = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(x, y)
    return abs(GEOD.polygon_area_perimeter(x, y)[0])


def test_spain_s2_bands_named_from_descriptions(spain_s2: Path) -> None:
    scene = open_scene(spain_s2)
    assert scene.sensor is not None and scene.sensor.key == "sentinel2_l1c"
    assert scene.bands["nir"].band_id == "B8"
    assert scene.bands["nir08"].band_id == "B8A"
    assert scene.bands["swir1"].band_id == "B11"
    with rasterio.open(spain_s2) as ds:
        raw = ds.read(8).astype(np.float32)
    nir = scene.read_band("nir")
    valid = raw != 0
    np.testing.assert_allclose(nir[valid], raw[valid] * 1e-4, rtol=1e-6)
    assert np.isnan(nir[~valid]).all()


def test_geographic_pixel_area_matches_geodesic_polygons(spain_s2: Path) -> None:
    grid = open_scene(spain_s2).grid
    area = grid.pixel_area_m2()
    assert area.shape == (grid.height, 1)
    for row in (0, 255, 511):
        assert area[row, 0] == pytest.approx(_geod_pixel_area(grid, row, 10), rel=1e-6)


def test_geographic_area_agrees_with_equal_area_reprojection(spain_s2: Path) -> None:
    scene = open_scene(spain_s2)
    bands = scene.read(["green", "swir1"])
    mndwi = (bands["green"] - bands["swir1"]) / (bands["green"] + bands["swir1"])
    mask = np.nan_to_num(mndwi, nan=-1) > 0
    ours = scene.grid.area_m2(mask)
    # Reference: the mask reprojected onto a fine equal-area grid (EPSG:6933), counted.
    dst_crs = "EPSG:6933"
    transform, width, height = calculate_default_transform(
        scene.grid.crs,
        dst_crs,
        scene.grid.width,
        scene.grid.height,
        *scene.grid.bounds,
        resolution=2.0,
    )
    target = np.zeros((height, width), dtype=np.uint8)
    reproject(
        mask.astype(np.uint8),
        target,
        src_transform=scene.grid.transform,
        src_crs=scene.grid.crs,
        dst_transform=transform,
        dst_crs=dst_crs,
        resampling=Resampling.nearest,
    )
    reference = float(target.sum()) * abs(transform.a * transform.e)
    assert ours == pytest.approx(reference, rel=0.005)
    # and the naive degrees-as-metres shortcut would be badly wrong
    naive = mask.sum() * (scene.grid.resolution[0] * 111_320) ** 2
    assert abs(naive - reference) / reference > 0.1


def test_projected_area_uses_scale_factor(tmp_path: Path) -> None:
    # UTM zone 30 far (~3 degrees) from its central meridian: scale factor ~1.0006
    path = write_tif(
        tmp_path / "utm.tif",
        np.ones((1, 20, 20), dtype=np.uint16),
        crs="EPSG:32630",
        transform=Affine(10, 0, 760000, 0, -10, 4200000),
    )
    grid = open_scene(path, band_map={"nir": 1}).grid
    area = np.broadcast_to(grid.pixel_area_m2(), grid.shape)
    assert area[5, 5] == pytest.approx(_geod_pixel_area(grid, 5, 5), rel=1e-5)
    assert abs(area[5, 5] - 100.0) > 0.05  # the planar shortcut would be off


def test_web_mercator_area_is_ground_area(tmp_path: Path) -> None:
    # At ~60 degrees north a Web Mercator pixel covers a quarter of its nominal area.
    path = write_tif(
        tmp_path / "merc.tif",
        np.ones((1, 8, 8), dtype=np.uint16),
        crs="EPSG:3857",
        transform=Affine(100, 0, 1000000, 0, -100, 8399000),
    )
    grid = open_scene(path, band_map={"red": 1}).grid
    area = np.broadcast_to(grid.pixel_area_m2(), grid.shape)
    assert area[4, 4] == pytest.approx(_geod_pixel_area(grid, 4, 4), rel=1e-4)


def test_folder_of_bands_at_two_resolutions() -> None:
    folder = sample("sentinel2/patagonia_bands")
    scene = open_scene(folder)
    assert {"blue", "green", "red", "nir", "swir1", "swir2"} <= set(scene.bands)
    assert scene.grid.resolution == pytest.approx((10.0, 10.0))
    swir = scene.read_band("swir1")
    assert swir.shape == scene.grid.shape and np.isfinite(swir).all()
    with rasterio.open(folder / "S2_swir1.tif") as ds:
        native = ds.read(1).astype(np.float64) * 1e-4
    # resampling keeps the radiometry: the means of the 10 m view and the 20 m source
    # over the same extent agree closely
    assert float(np.mean(swir)) == pytest.approx(float(native[:100, :150].mean()), rel=0.02)


def test_landsat_legacy_band_names_and_dn_note() -> None:
    scene = open_scene(sample("landsat/raleigh_2000_l7"))
    assert scene.sensor is not None and scene.sensor.key == "landsat7_etm"
    assert Path(scene.bands["nir"].path).name == "lsat7_2000_40.tif"
    assert Path(scene.bands["swir2"].path).name == "lsat7_2000_70.tif"
    assert any("DN" in note for note in scene.notes)
    nir = scene.read_band("nir")
    assert np.isnan(nir).any() and np.nanmin(nir) > 0  # -99999 nodata masked, not averaged


def test_bigearthnet_folder_sentinel2_l2a_with_date() -> None:
    folders = sorted(sample("sentinel2/bigearthnet").iterdir())
    scene = open_scene(folders[0])
    assert scene.sensor is not None and scene.sensor.key == "sentinel2_l2a"
    assert scene.date is not None and scene.date.startswith("20")
    assert scene.bands["nir08"].band_id.endswith("B8A")
    assert scene.grid.shape == (120, 120)
    assert scene.bands["red"].offset == 0.0  # pre-2022: no baseline offset


def test_sentinel2_baseline_offset_after_2022(tmp_path: Path) -> None:
    data = np.full((4, 8, 8), 2000, dtype=np.uint16)
    path = write_tif(
        tmp_path / "S2A_MSIL2A_20230601T105031_N0509_R051_T30TXM.tif",
        data,
        descriptions=["B2", "B3", "B4", "B8"],
    )
    scene = open_scene(path)
    assert scene.read_band("red")[0, 0] == pytest.approx(0.1)  # (2000 - 1000) / 10000


def test_sar_bands_and_linear_power_converted_to_db(spain_s1: Path, tmp_path: Path) -> None:
    scene = open_scene(spain_s1)
    assert set(scene.bands) == {"VV", "VH"} and scene.bands["VV"].units == "dB"
    linear = np.full((2, 6, 6), 0.01, dtype=np.float32)
    path = write_tif(tmp_path / "s1_linear.tif", linear, descriptions=["VV", "VH"])
    assert open_scene(path).read_band("VV")[0, 0] == pytest.approx(-20.0)


def test_rgb_png_without_crs_has_no_area() -> None:
    pairs = sample("change/levir_cd/A")
    scene = open_scene(sorted(pairs.iterdir())[0])
    assert set(scene.bands) == {"red", "green", "blue"}
    assert scene.grid.crs is None and scene.grid.pixel_area_m2() is None


def test_explicit_band_map_and_its_errors(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "four.tif", np.ones((4, 5, 5), dtype=np.uint16))
    scene = open_scene(path, band_map={"red": 3, "NIR": 4})
    assert set(scene.bands) == {"red", "nir"} and scene.bands["nir"].index == 4
    with pytest.raises(BandError, match="twice"):
        open_scene(path, band_map={"nir": 4, "N": 3})
    with pytest.raises(BandError, match="both"):
        open_scene(path, band_map={"nir": 4, "red": 4})
    with pytest.raises(BandError, match="does not match"):
        open_scene(path, band_map={"nir": 9})


def test_windowed_reads_equal_whole_reads(spain_s2: Path) -> None:
    scene = open_scene(spain_s2)
    whole = scene.read_band("swir2")
    parts = [scene.read_band("swir2", w) for w in scene.grid.windows(max_pixels=512 * 37)]
    np.testing.assert_array_equal(np.concatenate(parts, axis=0), whole)
    area_parts = sum(
        float(np.sum(np.broadcast_to(scene.grid.pixel_area_m2(w), (int(w.height), 512))))
        for w in scene.grid.windows(max_pixels=512 * 37)
    )
    assert area_parts == pytest.approx(
        float(np.sum(np.broadcast_to(scene.grid.pixel_area_m2(), scene.grid.shape)))
    )


def test_missing_and_corrupt_files_give_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="No such file"):
        open_scene(tmp_path / "nope.tif")
    good = write_tif(tmp_path / "good.tif", np.ones((3, 64, 64), dtype=np.uint8))
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(InputFileError) as info:
        scene = open_scene(truncated)
        scene.read_band(scene.band_names[0])
    assert "\n" not in str(info.value) and "corrupt" in str(info.value)
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(InputFileError, match="corrupt"):
        open_scene(text)


def test_pre_post_grid_check(tmp_path: Path) -> None:
    a = open_scene(
        write_tif(tmp_path / "a.tif", np.ones((1, 10, 10), dtype=np.uint16)), band_map={"red": 1}
    )
    b = open_scene(
        write_tif(tmp_path / "b.tif", np.ones((1, 12, 12), dtype=np.uint16)), band_map={"red": 1}
    )
    with pytest.raises(GridMismatchError, match="--align"):
        check_same_grid(a, b)
    aligned = check_same_grid(a, b, align=True)
    assert aligned.read_band("red").shape == (12, 12)
