"""spectral_index against numpy computed straight from rasterio reads of real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

import tools.spectral as spectral
from tests.conftest import sample, write_tif
from tools.errors import ArgumentError, BandError, EmptyResultError
from tools.raster import open_scene
from tools.spectral import index_info, list_indices, spectral_index


def _s2_reflectance(path: Path, *band_ids: str) -> dict[str, np.ndarray]:
    """Bands by description, as float64 TOA reflectance with nodata (0) as NaN; the
    2019 L1C product predates the baseline 04.00 offset, so reflectance = DN / 10000."""
    with rasterio.open(path) as ds:
        assert ds.nodata == 0
        index = {d: i for i, d in enumerate(ds.descriptions, start=1)}
        out = {}
        for band_id in band_ids:
            raw = ds.read(index[band_id])
            out[band_id] = np.where(raw == 0, np.nan, raw / 10000.0)
    return out


def _reference(path: Path, name: str) -> np.ndarray:
    b = _s2_reflectance(path, "B2", "B3", "B4", "B8", "B11", "B12")
    blue, green, red, nir, swir1, swir2 = (b[k] for k in ("B2", "B3", "B4", "B8", "B11", "B12"))
    with np.errstate(divide="ignore", invalid="ignore"):
        formulas = {
            "NDVI": lambda: (nir - red) / (nir + red),
            "NDWI": lambda: (green - nir) / (green + nir),
            "MNDWI": lambda: (green - swir1) / (green + swir1),
            "NBR": lambda: (nir - swir2) / (nir + swir2),
            "SAVI": lambda: 1.5 * (nir - red) / (nir + red + 0.5),  # L = 0.5
        }
        result = formulas[name]()
    return np.where(np.isfinite(result), result, np.nan)


@pytest.mark.parametrize("name", ["NDVI", "NDWI", "MNDWI", "NBR", "SAVI"])
def test_index_matches_numpy_on_sentinel2(spain_s2: Path, tmp_path: Path, name: str) -> None:
    expected = _reference(spain_s2, name)
    valid = np.isfinite(expected)
    constants = {"L": 0.5} if name == "SAVI" else None
    out = tmp_path / f"{name}.tif"
    with open_scene(spain_s2) as scene:
        result = spectral_index(scene, name.lower(), out=out, constants=constants)

    assert result.index == name
    assert result.valid_pixels == int(valid.sum())
    assert result.total_pixels == expected.size
    assert result.mean == pytest.approx(float(np.nanmean(expected)), rel=1e-5, abs=1e-6)
    assert result.std == pytest.approx(float(np.nanstd(expected)), rel=1e-4)
    assert result.min == pytest.approx(float(np.nanmin(expected)), abs=1e-5)
    assert result.max == pytest.approx(float(np.nanmax(expected)), abs=1e-5)
    assert result.percentiles["p50"] == pytest.approx(float(np.nanmedian(expected)), abs=1e-5)
    assert {b.band for b in result.bands} <= {"blue", "green", "red", "nir", "swir1", "swir2"}
    if name == "SAVI":
        assert result.constants == {"L": 0.5}

    assert result.output == str(out)
    with rasterio.open(out) as ds:
        assert ds.dtypes[0] == "float32"
        assert ds.descriptions[0] == name
        assert np.isnan(ds.nodata)
        written = ds.read(1)
    np.testing.assert_array_equal(np.isfinite(written), valid)
    np.testing.assert_allclose(written[valid], expected[valid], rtol=1e-5, atol=1e-6)


def test_band_sources_are_reported(spain_s2: Path) -> None:
    with open_scene(spain_s2) as scene:
        result = spectral_index(scene, "NDWI")
    sources = {b.code: (b.band, b.band_id) for b in result.bands}
    assert sources == {"G": ("green", "B3"), "N": ("nir", "B8")}
    assert result.formula == "(G-N)/(G+N)"
    assert result.long_name == "Normalized Difference Water Index"


def test_landsat_dn_folder_notes_approximation() -> None:
    folder = sample("landsat/raleigh_2000_l7")
    with open_scene(folder) as scene:
        result = spectral_index(scene, "NDVI")
    assert -1.0 <= result.min < result.mean < result.max <= 1.0
    assert result.valid_pixels > 0.5 * result.total_pixels
    assert any("DN" in note for note in result.notes)


def test_rgb_scene_lacks_nir() -> None:
    tile = sample("disaster/joplin_tornado_2011/post_aerial_tile_31500-5137.tif")
    with open_scene(tile) as scene, pytest.raises(BandError) as info:
        spectral_index(scene, "NDVI")
    message = str(info.value)
    assert "\n" not in message
    assert "nir (N)" in message and "NDVI" in message and "(N-R)/(N+R)" in message


def test_unknown_index_suggests_nearest(spain_s2: Path) -> None:
    with open_scene(spain_s2) as scene, pytest.raises(ArgumentError, match="NDVI"):
        spectral_index(scene, "NDVVI")


def test_unknown_constant_is_refused(spain_s2: Path) -> None:
    with open_scene(spain_s2) as scene, pytest.raises(ArgumentError, match="uses L"):
        spectral_index(scene, "SAVI", constants={"gamma": 1.0})


def _four_band(tmp_path: Path, red: np.ndarray, nir: np.ndarray, nodata: float | None) -> Path:
    green = np.full_like(red, 0.1)
    stack = np.stack([green, green, red, nir])
    return write_tif(
        tmp_path / "generated.tif",
        stack,
        nodata=nodata,
        descriptions=["blue", "green", "red", "nir"],
    )


def test_all_nodata_scene_is_empty_and_writes_nothing(tmp_path: Path) -> None:
    zeros = np.zeros((40, 50), dtype=np.float32)
    path = _four_band(tmp_path, zeros, zeros, nodata=0.0)
    out = tmp_path / "out" / "ndvi.tif"
    with open_scene(path) as scene, pytest.raises(EmptyResultError, match="no valid pixel"):
        spectral_index(scene, "NDVI", out=out)
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_nodata_and_division_by_zero_are_invalid(tmp_path: Path) -> None:
    red = np.full((30, 40), 0.1, dtype=np.float32)
    nir = np.full((30, 40), 0.5, dtype=np.float32)
    red[0, :] = -9999.0  # nodata
    red[1, :5], nir[1, :5] = 0.2, -0.2  # N + R == 0: NDVI undefined
    path = _four_band(tmp_path, red, nir, nodata=-9999.0)
    with open_scene(path) as scene:
        result = spectral_index(scene, "NDVI")
    assert result.valid_pixels == 30 * 40 - 40 - 5
    assert result.mean == pytest.approx(0.4 / 0.6, rel=1e-6)
    assert result.min == pytest.approx(result.max)


def test_windowed_stats_equal_single_window(spain_s2: Path) -> None:
    with open_scene(spain_s2) as scene:
        whole = spectral_index(scene, "NBR")
        strips = spectral_index(scene, "NBR", max_pixels=512 * 37)  # 14 uneven strips
        assert len(list(scene.windows(512 * 37))) > 10
    assert strips.valid_pixels == whole.valid_pixels
    for stat in ("mean", "std", "min", "max"):
        assert getattr(strips, stat) == pytest.approx(getattr(whole, stat), rel=1e-9)
    assert strips.percentiles == whole.percentiles


def test_sampled_percentiles_are_close(spain_s2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_scene(spain_s2) as scene:
        exact = spectral_index(scene, "NDVI")
        monkeypatch.setattr(spectral, "PERCENTILE_SAMPLE_SIZE", 20_000)
        sampled = spectral_index(scene, "NDVI", max_pixels=512 * 64)
    assert sampled.mean == pytest.approx(exact.mean, rel=1e-9)
    assert any("estimated" in note for note in sampled.notes)
    for key, value in exact.percentiles.items():
        assert sampled.percentiles[key] == pytest.approx(value, abs=0.01)


def test_sar_index_uses_linear_power(spain_s1: Path) -> None:
    with open_scene(spain_s1) as scene:
        result = spectral_index(scene, "DpRVIVV")
        db = scene.read(["VV", "VH"])
    vv, vh = (10 ** (db[k].astype(np.float64) / 10) for k in ("VV", "VH"))
    expected = 4 * vh / (vv + vh)
    assert result.mean == pytest.approx(float(np.nanmean(expected)), rel=1e-5)
    assert result.min > 0 and result.max <= 4
    assert any("linear power" in note for note in result.notes)


def test_catalogue_lookups() -> None:
    info = index_info("savi")
    assert info["index"] == "SAVI"
    assert info["constants"]["L"]["default"] == 1.0
    assert set(info["bands"]) == {"N", "R"}
    assert info["reference"].startswith("https://doi.org/")
    assert "NBR" in list_indices("burn") and "NDVI" not in list_indices("burn")
    assert len(list_indices()) >= 200
    with pytest.raises(ArgumentError, match="vegetation"):
        list_indices("forestry")
