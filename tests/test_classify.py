"""classify_scene: zero-shot CLIP end to end with a tiny random open_clip checkpoint
loaded through the tool's checkpoint path, and the offline land-cover fallback on real
samples."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import sample
from tools.classify import (
    DEFAULT_LABELS,
    ModelWeightsError,
    _views,
    classify_scene,
    clean_labels,
    image_embedding,
)
from tools.errors import ArgumentError
from tools.raster import open_scene

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def random_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ViT-B-32 with random weights, saved as a bare state dict (RemoteCLIP's format)."""
    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    path = tmp_path_factory.mktemp("clip") / "random_vit_b32.pt"
    torch.save(model.state_dict(), path)
    return path


def _check_ranking(result, n: int) -> None:
    probs = [s.probability for s in result.labels]
    assert len(probs) == n
    assert probs == sorted(probs, reverse=True)
    assert all(0 <= p <= 1 for p in probs)
    assert result.top_label == result.labels[0].label


def test_clip_custom_labels_end_to_end(random_clip: Path) -> None:
    labels = ["flooded farmland", "desert", "  forest ", "Desert", "dense city"]
    scene = open_scene(sample("sentinel2/patagonia_bands"))
    result = classify_scene(scene, labels, top_k=10, model_path=random_clip, device="cpu")
    assert result.method == "clip"
    assert result.labels_considered == 4  # "Desert" is a duplicate, "  forest " trimmed
    _check_ranking(result, 4)  # top_k above the label count returns every label
    assert math.isclose(sum(s.probability for s in result.labels), 1.0, abs_tol=1e-4)
    assert {s.label for s in result.labels} == {
        "flooded farmland",
        "desert",
        "forest",
        "dense city",
    }
    assert result.views == 1  # 300 x 200 px: smaller than two model inputs a side
    assert "ViT-B-32" in (result.model or "")


def test_clip_default_labels_and_embedding(
    random_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the default set (50 prompts) costs ~15 s through a ViT-B-32 text tower on 2 CPU
    # cores; a short stand-in checks that labels=None reaches the model
    monkeypatch.setattr("tools.classify.DEFAULT_LABELS", ("desert", "forest", "harbor"))
    scene = open_scene(sample("sentinel2/patagonia_bands"))
    result = classify_scene(scene, top_k=2, model_path=random_clip, device="cpu")
    assert result.labels_considered == 3
    _check_ranking(result, 2)
    vector = image_embedding(scene, random_clip, device="cpu")
    assert vector.shape == (512,) and vector.dtype == np.float32
    assert math.isclose(float(np.linalg.norm(vector)), 1.0, rel_tol=1e-5)


def test_large_scenes_are_seen_whole_and_in_tiles() -> None:
    views = _views(np.zeros((512, 700, 3), dtype=np.float32), 224)
    assert len(views) == 5  # whole + 2x2 tiles
    assert all(v.shape == (256, 256, 3) for v in views[1:])
    assert len(_views(np.zeros((2000, 2000, 3), dtype=np.float32), 224)) == 10  # capped 3x3


def test_label_set_handling() -> None:
    assert clean_labels(None) == list(DEFAULT_LABELS)
    assert len({x.lower() for x in DEFAULT_LABELS}) == len(DEFAULT_LABELS) == 50
    assert clean_labels([" lake ", "LAKE", "river  delta"]) == ["lake", "river delta"]
    with pytest.raises(ArgumentError, match="at least two"):
        clean_labels(["lake", " Lake", ""])
    with pytest.raises(ArgumentError, match="at most"):
        clean_labels([f"label {i}" for i in range(500)])


def test_missing_weights_error_names_the_setting(spain_s2: Path, tmp_path: Path) -> None:
    scene = open_scene(spain_s2)
    for path in (None, tmp_path / "absent.pt"):
        with pytest.raises(ModelWeightsError) as err:
            classify_scene(scene, ["a", "b"], model_path=path, fallback=False)
        message = str(err.value)
        assert "EOAGENT_CLIP_MODEL_PATH" in message and "\n" not in message
    with pytest.raises(ArgumentError, match="top_k"):
        classify_scene(scene, top_k=0)


def test_fallback_on_the_spain_flood(spain_s2: Path) -> None:
    result = classify_scene(open_scene(spain_s2), top_k=5)
    assert result.method == "land_cover_fallback"
    assert any("EOAGENT_CLIP_MODEL_PATH" in note for note in result.notes)
    _check_ranking(result, 5)
    top3 = [s.label for s in result.labels[:3]]
    assert "flooded area" in top3, top3
    assert result.land_cover and result.land_cover["water"] > 0.2
    assert "airplane" in result.unsupported_labels
    assert "desert" not in top3


def test_fallback_on_arid_patagonia() -> None:
    scene = open_scene(sample("sentinel2/patagonia_bands"))
    result = classify_scene(scene, top_k=3)
    assert result.method == "land_cover_fallback"
    assert result.top_label in {"desert", "bare land"}
    custom = classify_scene(scene, ["sand dunes", "rice paddies", "lake", "stadium"], top_k=4)
    assert custom.top_label == "sand dunes"
    assert custom.unsupported_labels == ["stadium"]
    assert len(custom.labels) == 3  # the unsupported label is not ranked
    assert math.isclose(sum(s.probability for s in custom.labels), 1.0, abs_tol=1e-4)


def test_fallback_needs_multispectral(tmp_path: Path) -> None:
    scene = open_scene(sample("landsat/bahamas_l7_rgb.tif"))
    with pytest.raises(ModelWeightsError, match="EOAGENT_CLIP_MODEL_PATH"):
        classify_scene(scene)
