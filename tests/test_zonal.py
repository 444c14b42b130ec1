"""zonal_stats on small rasters and footprints with a real CRS: exact statistics, areas
from the raster's own grid, regions in another CRS or on another grid, and a clear
message when result and region cover different places."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pydantic import BaseModel
from pyproj import Geod, Transformer

from agent.loop import dispatch
from agent.session import Session
from tests.conftest import write_tif
from tools.errors import ArgumentError
from tools.zonal import (
    ClassRegion,
    NoOverlapError,
    box_region,
    polygon_region,
    zonal_stats,
)

GEOD = Geod(ellps="WGS84")
# A lon/lat grid near Valencia: 20 x 20 pixels of 0.0001 degrees (~9 x 11 m).
LONLAT = Affine(0.0001, 0, -0.8, 0, -0.0001, 38.1)
# A UTM zone 30N grid of 10 m pixels, about the same place (500 km E is lon -3).
UTM = Affine(10, 0, 500000, 0, -10, 4200000)


def lonlat_box_area_m2(west: float, south: float, east: float, north: float) -> float:
    """Ground area of a lon/lat box: a geodesic polygon densified along the parallels."""
    lons = np.linspace(west, east, 400)
    ring_lon = np.concatenate([lons, lons[::-1]])
    ring_lat = np.concatenate([np.full(400, south), np.full(400, north)])
    return abs(GEOD.polygon_area_perimeter(ring_lon, ring_lat)[0])


def utm_pixel_area_m2(x: float, y: float, size: float = 10.0) -> float:
    to_lonlat = Transformer.from_crs("EPSG:32630", "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform([x, x + size, x + size, x], [y, y, y - size, y - size])
    return abs(GEOD.polygon_area_perimeter(lon, lat)[0])


def pixel_bounds(transform: Affine, col0: int, row0: int, col1: int, row1: int) -> list[float]:
    """[west, south, east, north] of the pixel block cols col0..col1-1, rows row0..row1-1."""
    west, north = transform * (col0, row0)
    east, south = transform * (col1, row1)
    return [west, south, east, north]


def write_geojson(path: Path, features: list[tuple[list, dict]], crs: str | None = None) -> Path:
    collection: dict = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": p,
            }
            for ring, p in features
        ],
    }
    if crs:
        collection["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(collection))
    return path


def square(x: float, y: float, size: float) -> list:
    return [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]


# -- rasters ----------------------------------------------------------------------------


def test_continuous_stats_and_area_inside_a_lonlat_box(tmp_path):
    values = np.arange(400, dtype=np.float32).reshape(20, 20) / 100
    values[6, 5] = np.nan  # nodata inside the region: neither counted nor in the area
    raster = write_tif(tmp_path / "ndvi.tif", values, crs="EPSG:4326", transform=LONLAT)
    bounds = pixel_bounds(LONLAT, 4, 5, 12, 10)  # 8 x 5 pixels
    result = zonal_stats(raster, box_region(bounds), label="ndvi_1")

    inside = values[5:10, 4:12]
    valid = inside[np.isfinite(inside)].astype(np.float64)
    assert result.kind == "continuous" and result.target == "ndvi_1"
    assert result.region_pixels == 40 and result.count == 39
    assert result.mean == pytest.approx(valid.mean(), rel=1e-9)
    assert result.std == pytest.approx(valid.std(), rel=1e-6)
    assert (result.min, result.max) == (pytest.approx(valid.min()), pytest.approx(valid.max()))
    box_m2 = lonlat_box_area_m2(*bounds)
    nan_pixel_m2 = lonlat_box_area_m2(*pixel_bounds(LONLAT, 5, 6, 6, 7))
    assert result.region_area_ha == pytest.approx(box_m2 / 1e4, abs=1e-4)
    assert result.area_ha == pytest.approx((box_m2 - nan_pixel_m2) / 1e4, abs=1e-4)
    # Window by window (3 rows at a time) gives the same statistics.
    windowed = zonal_stats(raster, box_region(bounds), label="ndvi_1", max_pixels=60)
    assert windowed.count == 39 and windowed.area_ha == result.area_ha
    assert windowed.mean == pytest.approx(result.mean, rel=1e-12)
    assert windowed.std == pytest.approx(result.std, rel=1e-9)
    # Never res_x * res_y in degrees: a degree-square pixel here is ~98 m², not 1e-8.
    assert 90 < box_m2 / 40 < 110
    # The dump carries only what applies to a continuous raster.
    dumped = result.model_dump(mode="json")
    assert "counts" not in dumped and "classes" not in dumped and dumped["count"] == 39


def test_class_areas_inside_a_lonlat_box_on_a_utm_raster(tmp_path):
    classes = np.zeros((20, 20), dtype=np.uint8)
    classes[:, 10:] = 2  # flood in the east half
    classes[0:4, 12:14] = 1  # a strip of permanent water
    classes[19, :] = 255  # nodata row
    raster = write_tif(tmp_path / "flood.tif", classes, transform=UTM, nodata=255)
    with rasterio.open(raster, "r+") as dst:
        dst.update_tags(eoagent_product="flood_map")
    # The UTM block rows 2..19, cols 8..15 as a lon/lat box (the region's CRS differs).
    x0, y1, x1, y0 = pixel_bounds(UTM, 8, 2, 16, 20)
    to_lonlat = Transformer.from_crs("EPSG:32630", "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform([x0, x1, x0, x1], [y0, y0, y1, y1])
    region = box_region([min(lon), min(lat), max(lon), max(lat)], "EPSG:4326")
    result = zonal_stats(raster, region, label="flood_1")

    assert result.kind == "classes"
    by_name = {c.name: c for c in result.classes}
    # rows 2..18 valid (17 rows), cols 8..15: dry cols 8-9, permanent rows 2-3 cols 12-13
    assert by_name["dry"].pixels == 17 * 2
    assert by_name["permanent water"].pixels == 2 * 2
    assert by_name["flood"].pixels == 17 * 6 - 4
    assert result.count == 17 * 8 and result.region_pixels == 18 * 8
    pixel_m2 = utm_pixel_area_m2(500080, 4199980)
    assert by_name["flood"].area_ha == pytest.approx(98 * pixel_m2 / 1e4, rel=1e-4)
    assert result.class_area_ha["dry"] == pytest.approx(34 * pixel_m2 / 1e4, rel=1e-4)
    assert by_name["flood"].fraction == pytest.approx(98 / 136, abs=1e-6)


def test_class_region_on_another_grid_is_resampled(tmp_path):
    values = np.arange(400, dtype=np.float32).reshape(20, 20)
    target = write_tif(tmp_path / "index.tif", values, transform=UTM)
    # A coarser (20 m) class raster offset by one 10 m pixel: class 3 in its block 2..5 x 1..3.
    coarse = np.zeros((12, 12), dtype=np.uint8)
    coarse[2:6, 1:4] = 3
    origin = Affine(20, 0, 499990, 0, -20, 4200010)
    region = write_tif(tmp_path / "burn.tif", coarse, transform=origin, nodata=0)
    result = zonal_stats(target, ClassRegion(region, "burn_1"), label="index_1")

    rows, cols = np.mgrid[0:20, 0:20]
    x, y = UTM * (cols + 0.5, rows + 0.5)
    col, row = ~origin * (x, y)
    expected = coarse[row.astype(int), col.astype(int)] == 3
    assert result.count == expected.sum() > 0
    assert result.mean == pytest.approx(values[expected].mean())
    assert result.region == "burn_1 (its non-zero classes)"
    assert any("resampled (nearest)" in n for n in result.notes)


def test_class_region_in_another_crs(tmp_path):
    values = np.ones((20, 20), dtype=np.float32)
    target = write_tif(tmp_path / "index.tif", values, transform=UTM)
    # A lon/lat water mask over the middle of the UTM raster: every region pixel water.
    x0, y1, x1, y0 = pixel_bounds(UTM, 5, 5, 15, 15)
    to_lonlat = Transformer.from_crs("EPSG:32630", "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform([x0, x1], [y0, y1])
    transform = Affine((lon[1] - lon[0]) / 50, 0, lon[0], 0, -(lat[1] - lat[0]) / 50, lat[1])
    mask = write_tif(
        tmp_path / "water.tif", np.ones((50, 50), np.uint8), crs="EPSG:4326", transform=transform
    )
    with rasterio.open(mask, "r+") as dst:
        dst.update_tags(eoagent_product="water_mask")
    result = zonal_stats(target, ClassRegion(mask, "water_1"), label="index_1")
    assert result.region == "water_1 (class water (1))"
    assert result.count == pytest.approx(100, abs=4)  # 10 x 10 pixels, edges resampled
    assert result.area_ha == pytest.approx(100 * utm_pixel_area_m2(500050, 4199950) / 1e4, rel=0.05)


def test_flood_region_means_flood_water_unless_classes_are_named(tmp_path):
    classes = np.zeros((20, 20), dtype=np.uint8)
    classes[:5] = 1  # permanent water (a river)
    classes[10:] = 2  # flood
    flood = write_tif(tmp_path / "flood.tif", classes, transform=UTM, nodata=255)
    with rasterio.open(flood, "r+") as dst:
        dst.update_tags(eoagent_product="flood_map")
    values = np.arange(400, dtype=np.float32).reshape(20, 20)
    index = write_tif(tmp_path / "index.tif", values, transform=UTM)

    flooded = zonal_stats(index, ClassRegion(flood, "flood_1"))
    assert flooded.count == 200 and flooded.mean == pytest.approx(values[10:].mean())
    assert flooded.region == "flood_1 (class flood (2))"
    river = zonal_stats(index, ClassRegion(flood, "flood_1", classes=(1,)))
    assert river.count == 100 and river.mean == pytest.approx(values[:5].mean())


def test_a_region_without_its_classes_here_is_an_explicit_zero(tmp_path):
    values = np.ones((20, 20), dtype=np.float32)
    index = write_tif(tmp_path / "index.tif", values, transform=UTM)
    dry = write_tif(tmp_path / "water.tif", np.zeros((20, 20), np.uint8), transform=UTM)
    with rasterio.open(dry, "r+") as dst:
        dst.update_tags(eoagent_product="water_mask")
    result = zonal_stats(index, ClassRegion(dry, "water_1"), label="index_1")
    assert result.count == 0 and result.mean is None and result.area_ha == 0
    assert any("No pixel of water_1 (class water (1)) lies on index_1" in n for n in result.notes)


def test_a_box_smaller_than_a_pixel_takes_the_pixel_it_touches(tmp_path):
    values = np.arange(400, dtype=np.float32).reshape(20, 20)
    index = write_tif(tmp_path / "index.tif", values, transform=UTM)
    result = zonal_stats(index, box_region([500031, 4199951, 500032, 4199952], "EPSG:32630"))
    assert result.count == 1 and result.mean == values[4, 3]


def test_a_continuous_raster_is_no_region(tmp_path):
    values = np.ones((20, 20), dtype=np.float32)
    index = write_tif(tmp_path / "index.tif", values, transform=UTM)
    with pytest.raises(ArgumentError, match="continuous values"):
        zonal_stats(index, ClassRegion(index, "ndvi_1"))


# -- footprints -------------------------------------------------------------------------


@pytest.fixture
def footprints(tmp_path) -> Path:
    """Six scored buildings in lon/lat around the middle of the LONLAT grid."""
    d = 0.00004  # ~4 m
    return write_geojson(
        tmp_path / "damage.geojson",
        [
            (square(-0.7996, 38.0985, d), {"damage_class": "destroyed"}),  # west, inside
            (square(-0.7994, 38.0990, d), {"damage_class": "destroyed"}),  # west, inside
            (square(-0.7993, 38.0995, d), {"damage_class": "no-damage"}),  # west, inside
            (square(-0.7991, 38.0985, 0.0003), {"damage_class": "major-damage"}),  # straddles
            (square(-0.7985, 38.0985, d), {"damage_class": "destroyed"}),  # east, outside
            (square(-0.7982, 38.0990, d), {"damage_class": "unscored"}),  # east, outside
        ],
    )


def box_ring(west: float, south: float, east: float, north: float) -> list:
    return [[west, south], [east, south], [east, north], [west, north], [west, south]]


def test_footprints_inside_a_box_and_a_polygon_file(footprints, tmp_path):
    bounds = [-0.8, 38.098, -0.799, 38.1]
    result = zonal_stats(footprints, box_region(bounds), label="damage_1")
    assert result.kind == "footprints" and result.features_tested == 6
    assert result.features_inside == 4
    assert result.counts == {
        "no-damage": 1,
        "minor-damage": 0,
        "major-damage": 1,
        "destroyed": 2,
    }
    # The same box as a polygon in UTM (a CRS other than the footprints').
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32630", always_xy=True)
    ring = [list(to_utm.transform(x, y)) for x, y in box_ring(*bounds)]
    region_file = write_geojson(tmp_path / "zone.geojson", [(ring, {})], crs="EPSG:32630")
    in_utm = zonal_stats(footprints, polygon_region(region_file), label="damage_1")
    assert in_utm.counts == result.counts and in_utm.region == "zone.geojson"


def test_footprints_on_a_class_raster_region(footprints, tmp_path):
    # A UTM flood map (another CRS than the footprints) flooded in its west part only.
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32630", always_xy=True)
    x, y = to_utm.transform(-0.8, 38.1)
    transform = Affine(10, 0, round(x), 0, -10, round(y))
    classes = np.zeros((40, 40), dtype=np.uint8)
    edge_x, _ = to_utm.transform(-0.79895, 38.099)  # through the straddling building
    west_cols = int((edge_x - round(x)) // 10)
    classes[:, :west_cols] = 2
    flood = write_tif(tmp_path / "flood.tif", classes, transform=transform, nodata=255)
    with rasterio.open(flood, "r+") as dst:
        dst.update_tags(eoagent_product="flood_map")

    result = zonal_stats(footprints, ClassRegion(flood, "flood_1"), label="damage_1")
    assert result.region == "flood_1 (class flood (2))"
    assert result.features_tested == 6 and result.features_inside == 4
    assert result.counts["destroyed"] == 2 and result.counts["major-damage"] == 1
    assert "unscored" not in result.counts  # an outside class is not listed as 0

    dry = zonal_stats(footprints, ClassRegion(flood, "flood_1", classes=(0,)), label="damage_1")
    assert dry.features_inside == 3  # the east two, and the one straddling the edge
    assert dry.counts["unscored"] == 1 and dry.counts["destroyed"] == 1


def test_footprint_region_by_class(footprints, tmp_path):
    values = np.arange(400, dtype=np.float32).reshape(20, 20)
    index = write_tif(tmp_path / "index.tif", values, crs="EPSG:4326", transform=LONLAT)
    destroyed = polygon_region(footprints, ["destroyed"], label="damage_1")
    assert destroyed.label == "damage_1 (destroyed)" and len(destroyed.geometries) == 3
    result = zonal_stats(index, destroyed)
    assert result.count > 0 and result.region == "damage_1 (destroyed)"
    with pytest.raises(ArgumentError, match="its classes are destroyed, major-damage"):
        polygon_region(footprints, ["minor-damage"])


# -- no overlap -------------------------------------------------------------------------


def test_no_overlap_is_an_error_that_says_so(footprints, tmp_path):
    values = np.ones((20, 20), dtype=np.float32)
    index = write_tif(tmp_path / "index.tif", values, transform=UTM)  # ~3 W, 37.9 N
    elsewhere = box_region([-94.5, 37.0, -94.4, 37.1])  # Joplin, Missouri
    with pytest.raises(NoOverlapError, match="index_1 and box .* do not overlap: they cover "):
        zonal_stats(index, elsewhere, label="index_1")
    flood = write_tif(tmp_path / "flood.tif", np.full((20, 20), 2, np.uint8), transform=UTM)
    with pytest.raises(NoOverlapError) as info:
        zonal_stats(footprints, ClassRegion(flood, "flood_1"), label="damage_1")
    message = str(info.value)
    assert message.startswith("damage_1 and flood_1 do not overlap: they cover different places")
    assert "damage_1: lon -0.79" in message and "flood_1: lon -3.00" in message
    with pytest.raises(NoOverlapError, match="index_1 and far_1 do not overlap"):
        zonal_stats(index, ClassRegion(_far_away(tmp_path), "far_1"), label="index_1")


def _far_away(tmp_path: Path) -> Path:
    return write_tif(
        tmp_path / "far.tif",
        np.ones((10, 10), np.uint8),
        crs="EPSG:4326",
        transform=Affine(0.001, 0, 100.0, 0, -0.001, 10.0),
    )


# -- through the registry ---------------------------------------------------------------


class _Stored(BaseModel):
    output: str


def _store(session: Session, tool: str, prefix: str, suffix: str, write) -> str:
    handle = session.begin_call(prefix)
    path = session.output_path(suffix)
    write(path)
    session.store_result(tool, {}, _Stored(output=str(path)))
    return handle


def test_zonal_stats_through_dispatch(footprints, tmp_path):
    session = Session.create(tmp_path / "sessions", "zonal")
    classes = np.zeros((20, 20), dtype=np.uint8)
    classes[:, :10] = 2

    def write_flood(path: Path) -> None:
        write_tif(path, classes, crs="EPSG:4326", transform=LONLAT, nodata=255)
        with rasterio.open(path, "r+") as dst:
            dst.update_tags(eoagent_product="flood_map")

    flood = _store(session, "flood_map", "flood", ".tif", write_flood)
    damage = _store(
        session,
        "building_damage",
        "damage",
        ".geojson",
        lambda p: p.write_text(footprints.read_text()),
    )
    zone = write_geojson(tmp_path / "zone.geojson", [(box_ring(-0.8, 38.098, -0.799, 38.1), {})])
    session.load(zone, "zone")
    assert (flood, damage) == ("flood_1", "damage_1")

    def call(**args):
        outcome = dispatch(session, {"name": "zonal_stats", "args": args})
        return outcome.record, session.state.results.get(outcome.record.handle or "", None)

    record, stored = call(result="damage_1", region="flood_1")
    assert record.ok and record.handle == "zonal_1"
    assert stored.data["counts"]["destroyed"] == 2 and stored.data["features_inside"] == 4
    record, stored = call(result="damage_1", region="zone")
    assert record.ok and stored.data["features_inside"] == 4
    record, stored = call(result="flood_1", bbox="-0.8, 38.098, -0.799, 38.1")
    assert record.ok and stored.data["class_area_ha"]["flood"] > 0
    assert stored.data["region"].endswith("(EPSG:4326)")
    record, stored = call(
        result="flood_1", bbox=list(pixel_bounds(LONLAT, 0, 0, 5, 5)), bbox_crs="map"
    )
    assert record.ok and stored.data["count"] == 25
    record, stored = call(result="flood_1", region="damage_1", region_classes="destroyed")
    assert record.ok and stored.data["region"] == "damage_1 (destroyed)"
    record, stored = call(result="flood_1", region="flood_1", region_classes=["dry"])
    assert record.ok and stored.data["class_area_ha"]["flood"] == 0

    record, stored = call(result="zone", region="damage_1", region_classes=["destroyed"])
    assert record.ok and stored.data["counts"] == {"unclassified": 1}  # a loaded polygon file

    record, _ = call(result="flood_1", region="flood_1", region_classes=["lava"])
    assert not record.ok and "flood_1 has no class 'lava'; its classes are: 0 dry" in record.error
    record, _ = call(result="flood_1")
    assert not record.ok and "give either 'region'" in record.error
    record, _ = call(result="flood_1", region="nowhere")
    assert not record.ok and "No region 'nowhere' in this session" in record.error
    record, _ = call(result="flood_1", bbox=[-94.5, 37.0, -94.4, 37.1])
    assert not record.ok and "NoOverlapError" in record.error and "do not overlap" in record.error
