"""Building damage: the Joplin 2011 tornado pair end to end, and synthetic pairs where
the damaged buildings are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio.warp
from affine import Affine
from PIL import Image
from shapely.geometry import box, mapping, shape

from tests.conftest import sample, write_tif
from tools.damage import DAMAGE_CLASSES, UNSCORED, building_damage, damage_class
from tools.errors import ArgumentError, EmptyResultError, GridMismatchError, InputFileError
from tools.raster import open_scene

JOPLIN = "disaster/joplin_tornado_2011"
CRS = "EPSG:32615"
ORIGIN = (360000.0, 4105000.0)  # UTM 15N near Joplin, Missouri
PIXEL_M = 0.5
SIZE = 160
# Ten 20x20 px (10 m) houses on a 5x2 lattice; the last three are turned to rubble.
HOUSES = [(20 + 28 * (i % 5), 30 + 70 * (i // 5)) for i in range(10)]
DEBRIS = {7, 8, 9}


def _houses_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pre: grass with smooth two-plane roofs. Post: the same scene seen by a brighter,
    lower-contrast sensor, with the DEBRIS houses replaced by chaotic rubble."""
    pre = np.empty((3, SIZE, SIZE), dtype=np.float32)
    for band, level in enumerate((0.30, 0.45, 0.25)):
        pre[band] = level + rng.normal(0, 0.02, (SIZE, SIZE))
    post = pre.copy()
    for i, (col, row) in enumerate(HOUSES):
        for band, level in enumerate((0.55, 0.50, 0.48)):
            # Two roof planes, lit differently, meeting at a ridge.
            pre[band, row : row + 20, col : col + 10] = level
            pre[band, row : row + 20, col + 10 : col + 20] = level * 0.8
        post[:, row : row + 20, col : col + 20] = pre[:, row : row + 20, col : col + 20]
        if i in DEBRIS:
            post[:, row : row + 20, col : col + 20] = rng.uniform(0.05, 0.95, (3, 20, 20))
    post = 0.8 * post + 0.1  # another sensor: the histogram matching must absorb this
    return _to_uint8(pre), _to_uint8(post)


def _to_uint8(bands: np.ndarray) -> np.ndarray:
    return (np.clip(bands, 0, 1) * 255).round().astype(np.uint8)


def _transform(shift_px: float = 0.0) -> Affine:
    return Affine(PIXEL_M, 0, ORIGIN[0] + shift_px * PIXEL_M, 0, -PIXEL_M, ORIGIN[1])


def _footprints_geojson(path: Path, houses: list[tuple[int, int]]) -> Path:
    features = []
    t = _transform()
    for i, (col, row) in enumerate(houses):
        x0, y0 = t * (col, row + 20)
        x1, y1 = t * (col + 20, row)
        outline = rasterio.warp.transform_geom(CRS, "OGC:CRS84", mapping(box(x0, y0, x1, y1)))
        features.append({"type": "Feature", "properties": {"house": i}, "geometry": outline})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


@pytest.fixture
def synthetic(tmp_path: Path) -> dict[str, Path]:
    pre, post = _houses_pair(np.random.default_rng(7))
    return {
        "pre": write_tif(tmp_path / "pre.tif", pre, crs=CRS, transform=_transform()),
        "post": write_tif(tmp_path / "post.tif", post, crs=CRS, transform=_transform()),
        "footprints": _footprints_geojson(tmp_path / "houses.geojson", HOUSES),
    }


def _run(paths: dict[str, Path], out: Path, **kwargs: object):
    return building_damage(
        open_scene(paths["pre"]), open_scene(paths["post"]), paths["footprints"], out, **kwargs
    )


def test_debris_scores_high_and_unchanged_houses_no_damage(synthetic, tmp_path):
    result = _run(synthetic, tmp_path / "out" / "damage.geojson")
    assert result.buildings_total == result.buildings_in_scene == result.buildings_scored == 10
    props = {
        f["properties"]["house"]: f["properties"]
        for f in json.loads(Path(result.output).read_text())["features"]
    }
    debris = [props[i]["damage_score"] for i in DEBRIS]
    intact = [props[i]["damage_score"] for i in props if i not in DEBRIS]
    assert min(debris) > max(intact)
    assert all(props[i]["damage_class"] in ("major-damage", "destroyed") for i in DEBRIS)
    assert all(props[i]["damage_class"] == "no-damage" for i in props if i not in DEBRIS)
    assert result.counts["no-damage"] == 7
    # 10 m x 10 m footprints, computed on the ellipsoid from the lon/lat outline.
    assert result.area_ha["no-damage"] == pytest.approx(7 * 0.01, rel=0.01)
    assert not list((tmp_path / "out").glob("*.part*")), "temporary files left behind"


def test_ring_buffer_and_partial_footprints(synthetic, tmp_path):
    # A house half outside the scene is scored on its inside part; one fully outside is
    # skipped and counted; one of a few pixels is kept but reported unscored.
    t = _transform()
    houses = [*HOUSES, (SIZE - 10, 100), (SIZE + 50, 100)]
    features = json.loads(_footprints_geojson(tmp_path / "h.geojson", houses).read_text())
    x0, y0 = t * (2, 150)
    tiny = rasterio.warp.transform_geom(CRS, "OGC:CRS84", mapping(box(x0, y0, x0 + 1, y0 + 1)))
    features["features"].append({"type": "Feature", "properties": {}, "geometry": tiny})
    synthetic["footprints"].write_text(json.dumps(features))
    result = _run(synthetic, tmp_path / "ring.geojson", buffer_m=1.0)
    assert result.buildings_outside == 1
    assert result.buildings_in_scene == 12
    assert result.buildings_unscored == 1
    assert sum(result.counts.values()) == result.buildings_scored == 11
    written = json.loads(Path(result.output).read_text())["features"]
    assert [f["properties"]["damage_class"] for f in written].count(UNSCORED) == 1


def test_grids_must_match_unless_aligned(synthetic, tmp_path):
    pre, _ = _houses_pair(np.random.default_rng(7))
    shifted = write_tif(tmp_path / "pre_shifted.tif", pre, crs=CRS, transform=_transform(3))
    synthetic["pre"] = shifted
    with pytest.raises(GridMismatchError, match="align"):
        _run(synthetic, tmp_path / "a.geojson")
    assert not (tmp_path / "a.geojson").exists()
    result = _run(synthetic, tmp_path / "a.geojson", align=True)
    assert result.buildings_scored == 10
    assert any("resampled" in note for note in result.notes)


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (None, InputFileError, "does not exist"),
        ("{not json", InputFileError, "not valid GeoJSON"),
        ('{"type": "Topology"}', InputFileError, "FeatureCollection"),
        (
            '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},'
            ' "geometry": {"type": "Point", "coordinates": [-94.5, 37.07]}}]}',
            EmptyResultError,
            "no Polygon",
        ),
    ],
)
def test_bad_footprint_files(synthetic, tmp_path, content, error, message):
    path = tmp_path / "bad.geojson"
    if content is not None:
        path.write_text(content)
    synthetic["footprints"] = path
    with pytest.raises(error, match=message) as info:
        _run(synthetic, tmp_path / "never.geojson")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "never.geojson").exists()


def test_footprints_elsewhere_and_bad_output(synthetic, tmp_path):
    far = [(col + 5000, row) for col, row in HOUSES]
    synthetic["footprints"] = _footprints_geojson(tmp_path / "far.geojson", far)
    with pytest.raises(EmptyResultError, match="intersect the scene"):
        _run(synthetic, tmp_path / "never.geojson")
    with pytest.raises(ArgumentError, match=".geojson"):
        _run(synthetic, tmp_path / "damage.tif")


def test_class_limits_cover_the_score_range():
    assert [damage_class(s) for s in (0.0, 0.3, 0.6, 1.0)] == list(DAMAGE_CLASSES)


def test_joplin_tornado_end_to_end(tmp_path):
    folder = sample(JOPLIN)
    pre = open_scene(folder / "pre_aerial_aligned_to_post_31500-5137.tif")
    post = open_scene(folder / "post_aerial_tile_31500-5137.tif")
    footprints = folder / "building_footprints_joplin.geojson"
    result = building_damage(pre, post, footprints, tmp_path / "joplin_damage.geojson")

    scene_box = box(*post.grid.bounds)  # EPSG:4326, same axes as the CRS84 footprints
    source = json.loads(footprints.read_text())["features"]
    expected = sum(shape(f["geometry"]).intersects(scene_box) for f in source)
    assert result.buildings_total == len(source)
    assert result.buildings_in_scene == expected
    assert result.buildings_outside == len(source) - expected

    written = json.loads(Path(result.output).read_text())["features"]
    assert len(written) == expected
    scored = [f["properties"] for f in written if f["properties"]["damage_class"] != UNSCORED]
    assert len(scored) == result.buildings_scored == sum(result.counts.values())
    assert all(0.0 <= p["damage_score"] <= 1.0 for p in scored)
    assert all(p["damage_class"] in DAMAGE_CLASSES for p in scored)
    assert all("release" in p for p in scored), "original properties are kept"
    assert not list(tmp_path.glob("*.part*"))

    # The EF5 track crosses the southern part of this tile: buildings there must score
    # well above those of the intact north-west.
    west, south, east, north = post.grid.bounds
    lat = np.array([shape(f["geometry"]).centroid.y for f in written])
    lon = np.array([shape(f["geometry"]).centroid.x for f in written])
    scores = np.array([f["properties"]["damage_score"] for f in written], dtype=float)
    track = lat < south + 0.35 * (north - south)
    north_west = (lat > south + 0.6 * (north - south)) & (lon < west + 0.3 * (east - west))
    assert np.nanmean(scores[track]) > np.nanmean(scores[north_west]) + 0.3
    assert result.counts["destroyed"] + result.counts["major-damage"] > result.counts["no-damage"]

    with Image.open(result.quicklook) as png:
        assert png.size == (post.grid.width, post.grid.height)
