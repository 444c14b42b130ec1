"""segment with a tiny random SAM built here: prompts (point, box, ground result, lon/lat),
the mask on the scene grid, its area and polygons, and the errors a user can act on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer

from tests.conftest import sample, write_tif
from tools.errors import ArgumentError
from tools.raster import open_scene
from tools.segmentation import crop_window, segment, to_pixels
from tools.vision_models import WeightsError, WeightsNotConfigured

os.environ.setdefault("HF_HUB_OFFLINE", "1")
UTM = Affine(10, 0, 500000, 0, -10, 4200000)


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import (
        SamConfig,
        SamImageProcessor,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    vision = SamVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=64,
        patch_size=16,
        output_channels=32,
        num_pos_feats=16,
        global_attn_indexes=[1],
        window_size=2,
        mlp_dim=64,
    )
    prompt = SamPromptEncoderConfig(
        hidden_size=32, image_size=64, patch_size=16, mask_input_channels=4
    )
    decoder = SamMaskDecoderConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_dim=64,
        iou_head_hidden_dim=32,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam")
    SamModel(
        SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)
    ).save_pretrained(path)
    SamProcessor(
        image_processor=SamImageProcessor(
            size={"longest_edge": 64},
            pad_size={"height": 64, "width": 64},
            mask_size={"longest_edge": 16},
            mask_pad_size={"height": 16, "width": 16},
        )
    ).save_pretrained(path)
    return path


@pytest.fixture
def scene_path(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    bands = rng.integers(0, 255, (3, 160, 200), dtype=np.uint8)
    bands[:, 40:90, 50:120] = 200  # a bright field
    return write_tif(tmp_path / "rgb.tif", bands, transform=UTM)


def test_box_prompt_gives_a_mask_on_the_scene_grid(tmp_path, scene_path, sam_dir):
    scene = open_scene(scene_path)
    out = tmp_path / "results" / "segment_1.tif"
    result = segment(scene, box=[50, 40, 120, 90], model=sam_dir, out=out)
    assert result.prompt == "box" and result.prompt_pixels == [50, 40, 120, 90]
    with rasterio.open(out) as src:
        mask = src.read(1)
        assert src.crs == scene.grid.crs and src.transform == scene.grid.transform
        assert src.shape == (160, 200) and src.tags()["eoagent_product"] == "segment"
    assert set(np.unique(mask)) <= {0, 1}
    assert int(mask.sum()) == result.pixels > 0
    # SAM sees the box and a margin of 25% of its longest side (17.5 px) around it
    rows, cols = np.nonzero(mask)
    assert rows.min() >= 40 - 18 and rows.max() < 90 + 18
    assert cols.min() >= 50 - 18 and cols.max() < 120 + 18
    assert result.mask_box == [
        int(cols.min()),
        int(rows.min()),
        int(cols.max()) + 1,
        int(rows.max()) + 1,
    ]
    expected_ha = scene.grid.area_m2(mask.astype(bool)) / 1e4
    assert result.area_ha == pytest.approx(expected_ha, abs=1e-4)
    assert result.area_ha == pytest.approx(result.pixels * 0.01 / 0.9996**2, abs=1e-4)
    collection = json.loads(Path(result.geojson).read_text())
    assert len(collection["features"]) == result.polygons > 0
    traced = sum(f["properties"]["area_ha"] for f in collection["features"])
    assert traced == pytest.approx(result.area_ha, rel=1e-3)
    assert np.isfinite(result.score)  # SAM's predicted IoU; any value with random weights
    assert Path(result.quicklook).stat().st_size > 0


def test_point_prompts_in_pixels_lonlat_and_map_agree(scene_path, sam_dir):
    scene = open_scene(scene_path)
    x, y = 500855.0, 4199365.0  # pixel (85.5, 63.5)
    lon, lat = Transformer.from_crs("EPSG:32630", "EPSG:4326", always_xy=True).transform(x, y)
    assert to_pixels(scene.grid, [x], [y], "map").tolist() == [[85.5, 63.5]]
    assert to_pixels(scene.grid, [lon], [lat], "lonlat")[0] == pytest.approx([85.5, 63.5], abs=1e-6)
    by_pixel = segment(scene, point=[85.5, 63.5], model=sam_dir)
    by_lonlat = segment(scene, point=[lon, lat], coords="lonlat", model=sam_dir)
    assert by_pixel.prompt == "point" and by_pixel.pixels == by_lonlat.pixels
    assert by_lonlat.prompt_pixels == pytest.approx([85.5, 63.5], abs=1e-6)
    assert by_pixel.output is None


def test_a_ground_result_box_as_prompt(sam_dir):
    scene = open_scene(sample("objects/dior_rsvg/00001.jpg"))
    grounded = {
        "expression": "A green and brown golf field",
        "box": {"pixel_box": [133, 237, 684, 672], "label": "golf field"},
    }
    result = segment(scene, ground_result=grounded, model=sam_dir)
    assert result.prompt == "ground" and result.area_ha is None and result.crs is None
    x1, y1, x2, y2 = result.mask_box or [0, 0, 800, 800]
    assert 0 <= x1 < x2 <= 800 and 0 <= y1 < y2 <= 800
    window = crop_window(scene.grid, None, np.array([133, 237, 684, 672]), 1024, 0.25)
    assert (window.col_off, window.row_off, window.width, window.height) == (0, 99, 800, 701)


def test_prompt_errors_say_what_to_do(scene_path, sam_dir, tmp_path, monkeypatch):
    scene = open_scene(scene_path)
    with pytest.raises(ArgumentError, match="exactly one prompt"):
        segment(scene, model=sam_dir)
    with pytest.raises(ArgumentError, match="exactly one prompt"):
        segment(scene, point=[1, 1], box=[0, 0, 5, 5], model=sam_dir)
    with pytest.raises(ArgumentError, match="outside the scene"):
        segment(scene, point=[500, 20], model=sam_dir)
    with pytest.raises(ArgumentError, match="no box"):
        segment(scene, ground_result={"expression": "x"}, model=sam_dir)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EOAGENT_SAM_MODEL", raising=False)
    with pytest.raises(WeightsNotConfigured, match="EOAGENT_SAM_MODEL") as err:
        segment(scene, point=[10, 10])
    assert "\n" not in str(err.value)
    with pytest.raises(WeightsError, match="Could not load"):
        segment(scene, point=[10, 10], model=tmp_path)
