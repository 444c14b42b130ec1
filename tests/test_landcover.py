"""land_cover and describe_scene on the real samples, and their failure modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.conftest import sample, write_tif
from tools.caption import describe_scene, source_phrase
from tools.errors import BandError, EmptyResultError
from tools.landcover import CLASSES, NODATA, land_cover, local_variation, majority_filter
from tools.raster import open_scene


@pytest.fixture(scope="module")
def spain_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("lc") / "spain_lc.tif"
    scene = open_scene(sample("sentinel2/spain_flood_2019_s2_l1c.tif"))
    return scene, land_cover(scene, out=out)


def test_spain_flood_shares_are_plausible(spain_result):
    _, r = spain_result
    s = r.shares
    assert sum(s.values()) == pytest.approx(1.0, abs=1e-4)
    # Sen1Floods11 Spain chip: about a quarter to a third under flood water
    assert 0.2 < s["water"] < 0.4
    assert 0.2 < s["dense vegetation"] + s["sparse vegetation"] < 0.5
    assert 0.03 < s["built-up"] < 0.2  # Vega Baja towns and roads, not the wet fields
    assert s["snow"] < 0.001 and s["burned"] < 0.01 and r.cloud_share < 0.01
    assert r.thresholds["mndwi_water"] == pytest.approx(0.155, abs=0.05)


def test_spain_areas_match_the_grid(spain_result):
    scene, r = spain_result
    total_ha = sum(c.area_ha for c in r.classes.values())
    assert total_ha == pytest.approx(r.valid_area_ha, rel=1e-6)
    grid_ha = scene.grid.area_m2(np.ones(scene.grid.shape, bool)) / 1e4
    assert r.valid_area_ha == pytest.approx(grid_ha, rel=1e-3)  # no nodata in this chip
    water = r.classes["water"]
    assert water.area_ha / r.valid_area_ha == pytest.approx(water.share, rel=0.02)


def test_spain_outputs_are_written(spain_result):
    _, r = spain_result
    with rasterio.open(r.output) as src:
        codes = src.read(1)
        assert src.nodata == NODATA and src.crs.to_epsg() == 4326
    present = set(np.unique(codes).tolist())
    assert present <= set(CLASSES) | {NODATA}
    assert np.mean(codes == 1) == pytest.approx(r.shares["water"], abs=1e-6)
    collection = json.loads(Path(r.geojson).read_text())
    classes = {f["properties"]["class"] for f in collection["features"]}
    assert {"water", "built-up"} <= classes
    assert collection["properties"]["shares"]["water"] == r.shares["water"]
    with open(r.quicklook, "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"


def test_windowed_equals_whole():
    scene = open_scene(sample("sentinel2/spain_flood_2019_s2_l1c.tif"))
    whole = land_cover(scene)
    strips = land_cover(scene, max_pixels=512 * 37)  # 14 strips of 37 rows
    assert strips.shares == whole.shares
    assert strips.thresholds == whole.thresholds


def test_patagonia_is_bare_desert():
    r = land_cover(open_scene(sample("sentinel2/patagonia_bands")))
    assert r.dominant == "bare soil" and r.shares["bare soil"] > 0.85
    assert r.shares["water"] < 0.01 and r.shares["built-up"] < 0.05


def test_raleigh_dn_is_calibrated_and_flagged():
    r = land_cover(open_scene(sample("landsat/raleigh_2000_l7")))
    veg = r.shares["dense vegetation"] + r.shares["sparse vegetation"]
    assert 0.45 < veg < 0.85 and 0.1 < r.shares["built-up"] < 0.45
    assert r.shares["burned"] == 0 and r.shares["cloud"] == 0  # not mapped on DN
    assert any("Raw DN" in n and "ETM+" in n for n in r.notes)


def test_rgb_scene_is_refused_with_advice():
    with pytest.raises(BandError, match="NIR and SWIR.*describe_scene"):
        land_cover(open_scene(sample("landsat/bahamas_l7_rgb.tif")))


def test_sar_scene_is_refused_with_advice(spain_s1):
    with pytest.raises(BandError, match="SAR.*water_mask"):
        land_cover(open_scene(spain_s1))


def test_all_nodata_scene(tmp_path):
    bands = np.zeros((4, 20, 20), dtype=np.uint16)
    path = write_tif(
        tmp_path / "empty.tif", bands, descriptions=["B3", "B4", "B8", "B11"], nodata=0
    )
    scene = open_scene(path, band_map={"green": 1, "red": 2, "nir": 3, "swir1": 4})
    with pytest.raises(EmptyResultError, match="no clear valid pixel"):
        land_cover(scene, out=tmp_path / "lc.tif")
    assert not (tmp_path / "lc.tif").exists()


def test_texture_and_majority_helpers():
    flat = np.full((7, 7), 0.2, dtype=np.float32)
    flat[3, 3] = np.nan
    tex = local_variation(flat)
    assert np.isnan(tex[3, 3]) and np.nanmax(tex) == pytest.approx(0, abs=1e-6)
    classes = np.full((5, 5), 5, dtype=np.uint8)
    classes[2, 2] = 1
    classes[0, 0] = NODATA
    smooth = majority_filter(classes)
    assert smooth[2, 2] == 5 and smooth[0, 0] == NODATA


def test_caption_is_deterministic_and_measured(spain_result):
    scene, r = spain_result
    first = describe_scene(scene, land_cover=r)
    again = describe_scene(open_scene(sample("sentinel2/spain_flood_2019_s2_l1c.tif")))
    assert first.caption == again.caption
    text = first.caption
    assert text.startswith("Sentinel-2 MSI Level-1C")
    assert "38.11°N, 0.76°W" in text and "date unknown" in text
    assert f"water {round(100 * r.shares['water'])}%" in text
    assert "flood" in text and first.water_share == pytest.approx(r.shares["water"], abs=1e-4)


def test_caption_of_other_kinds():
    sar = describe_scene(open_scene(sample("sar/spain_flood_2019_s1.tif")))
    assert "Radar backscatter" in sar.caption and 0.1 < sar.water_share < 0.4
    rgb = describe_scene(open_scene(sample("landsat/bahamas_l7_rgb.tif")))
    assert "Visible bands only" in rgb.caption and "blue-dominated" in rgb.caption
    dated = describe_scene(
        open_scene(sample("sentinel2/bigearthnet/S2A_MSIL2A_20170617T113321_36_85"))
    )
    assert "acquired 2017-06-17" in dated.caption and "dense vegetation" in dated.caption
    photo = describe_scene(open_scene(sample("objects/rsicd/stadium_1.jpg")))
    assert "without georeference" in photo.caption and photo.centre_lat is None


def test_source_phrase():
    phrase = source_phrase("/d/joplin_tornado_2011/post_aerial_tile_31500-5137.tif")
    assert phrase == "joplin tornado 2011, post (after the event) aerial tile"
