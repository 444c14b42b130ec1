"""synthesize_image: a tiny Stable Diffusion pipeline end to end, and each physics-based
augmentation measured on the real Spain Sentinel-2 chip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tools import augment
from tools.classify import ModelWeightsError
from tools.errors import BandError
from tools.raster import open_scene
from tools.synthesis import AugmentParams, augment_scene, band_wavelengths, text_to_image

BANDS = ["blue", "green", "red", "nir", "swir1"]


@pytest.fixture(scope="module")
def spain(tmp_path_factory: pytest.TempPathFactory):
    from tests.conftest import sample

    scene = open_scene(sample("sentinel2/spain_flood_2019_s2_l1c.tif"))
    data = scene.read(BANDS)
    return scene, np.stack([data[b] for b in BANDS])


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Stable Diffusion pipeline built from configs, saved like a real one. The
    CLIP tokenizer comes from open_clip's bundled BPE vocabulary (no hub)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("sd")
    bpe = SimpleTokenizer()
    special = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {special.get(k, k): v for k, v in bpe.encoder.items()}
    (root / "vocab.json").write_text(json.dumps(vocab))
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.__getitem__)
    (root / "merges.txt").write_text("#version: 0.2\n" + "\n".join(map(" ".join, merges)) + "\n")
    tokenizer = CLIPTokenizer(
        str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=77
    )
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
    )  # fmt: skip
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            vocab_size=len(tokenizer), bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
        )
    )  # fmt: skip
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(root / "pipeline")
    return root / "pipeline"


def test_text_to_image_end_to_end(tiny_pipeline: Path, tmp_path: Path) -> None:
    kwargs = dict(model_path=tiny_pipeline, steps=2, width=64, height=64, seed=3, device="cpu")
    result = text_to_image("a satellite image of a river delta", tmp_path / "a.png", **kwargs)
    assert result.mode == "text_to_image" and (result.width, result.height) == (64, 64)
    again = text_to_image("a satellite image of a river delta", tmp_path / "b.tif", **kwargs)
    with rasterio.open(again.output) as tif:
        assert tif.count == 3 and tif.crs is None and tif.descriptions == ("red", "green", "blue")
        pixels = tif.read()
    from PIL import Image

    png = np.asarray(Image.open(result.output).convert("RGB")).transpose(2, 0, 1)
    assert np.abs(png.astype(int) - pixels.astype(int)).max() <= 1  # same seed, same image
    assert any("not an observation" in n for n in result.notes)


def test_text_to_image_without_weights_names_the_setting(tmp_path: Path) -> None:
    for path in (None, tmp_path):
        with pytest.raises(ModelWeightsError, match="EOAGENT_DIFFUSION_MODEL_PATH"):
            text_to_image("a lake", tmp_path / "x.png", model_path=path)


def test_haze_lifts_blue_more_than_swir_and_lowers_contrast(spain) -> None:
    scene, x = spain
    wl = band_wavelengths(scene)
    wl = [wl[scene.band_names.index(b)] for b in BANDS]
    hazy = augment.add_haze(x, wl, strength=0.5, seed=1)
    lift = np.nanmean(hazy - x, axis=(1, 2))
    assert lift[0] > 3 * lift[4] > 0  # blue vs SWIR1 (Angstrom law)
    assert np.all(np.diff(lift[[0, 1, 2, 3, 4]]) < 0)  # falls with wavelength
    # local contrast (neighbour differences) drops with the transmission
    assert np.nanstd(np.diff(hazy[0], axis=1)) < 0.7 * np.nanstd(np.diff(x[0], axis=1))


def test_clouds_cover_and_shadows(spain) -> None:
    _, x = spain
    wl = [490.0, 560.0, 665.0, 842.0, 1610.0]
    for cover in (0.1, 0.4):
        out, alpha, shade = augment.add_clouds(
            x, wl, cover=cover, seed=5, shadow_offset=(-30.0, 20.0)
        )
        assert abs(float(np.mean(alpha > 0)) - cover) < 0.03
    thick = alpha >= 1
    vnir = out[:4, thick].mean(axis=1)
    assert np.all(vnir > 0.6) and np.ptp(vnir) < 0.05  # bright and flat in the VNIR
    assert out[4, thick].mean() < 0.85 * vnir.mean()  # lower in SWIR
    dark = (shade >= 1) & (alpha == 0)
    assert dark.mean() > 0.02
    assert np.allclose(out[3][dark], augment.SHADOW_DIFFUSE * x[3][dark], rtol=1e-4)
    # the shadow is the cloud mask displaced by the offset (rows -30, cols +20)
    expected = alpha[30:, :-20] * (1 - alpha[:-30, 20:])
    np.testing.assert_allclose(shade[:-30, 20:], expected, atol=1e-6)
    # sun due south: the shadow falls due north (up the image)
    assert augment.shadow_offset_px(180, 45, 1000, 10) == pytest.approx((-100, 0), abs=1e-9)


def test_noise_matches_requested_snr(spain) -> None:
    _, x = spain
    noisy = augment.add_noise(x, 50.0, seed=2)
    diff = noisy - x
    z = diff / augment.noise_sigma(x, 50.0)
    assert abs(float(np.nanstd(z)) - 1) < 0.02
    near_ref = np.abs(x - augment.NOISE_REFERENCE) < 0.005
    measured_snr = augment.NOISE_REFERENCE / float(np.nanstd(diff[near_ref]))
    assert measured_snr == pytest.approx(50.0, rel=0.05)
    assert np.array_equal(noisy, augment.add_noise(x, 50.0, seed=2))
    assert not np.array_equal(noisy, augment.add_noise(x, 50.0, seed=3))


def test_misregistration_shift_measured_by_cross_correlation(spain) -> None:
    from skimage.registration import phase_cross_correlation

    _, x = spain
    shifted = augment.misregister(x[:2], [(0.0, 0.0), (1.5, -0.75)])
    assert np.array_equal(shifted[0], x[0])
    ref, moved = np.nan_to_num(x[1][32:-32, 32:-32]), np.nan_to_num(shifted[1][32:-32, 32:-32])
    found, _, _ = phase_cross_correlation(ref, moved, upsample_factor=20)
    assert -found == pytest.approx([1.5, -0.75], abs=0.15)


def test_scale_change_keeps_bounds(spain, tmp_path: Path) -> None:
    scene, x = spain
    result = augment_scene(scene, ["scale"], tmp_path / "coarse.tif", quicklook=False)
    coarse = open_scene(result.output)
    assert (coarse.grid.width, coarse.grid.height) == (256, 256)
    assert coarse.grid.resolution == pytest.approx(tuple(2 * r for r in scene.grid.resolution))
    assert coarse.grid.bounds == pytest.approx(scene.grid.bounds, abs=1e-9)
    assert coarse.grid.crs == scene.grid.crs and coarse.band_names == scene.band_names
    blue = coarse.read_band("blue")
    assert blue[10, 20] == pytest.approx(np.nanmean(x[0, 20:22, 40:42]), rel=1e-5)
    assert augment.coarsen(x[:1, :9, :9], 3.0)[0, 1, 2] == pytest.approx(
        np.nanmean(x[0, 3:6, 6:9]), rel=1e-5
    )


def test_augmented_scene_keeps_grid_is_deterministic_and_window_free(spain, tmp_path) -> None:
    scene, _ = spain
    kinds = ["noise", "clouds", "misregistration", "haze"]
    params = AugmentParams(cloud_cover=0.2, snr=80, haze_strength=0.3)
    a = augment_scene(scene, kinds, tmp_path / "a.tif", params=params, seed=7)
    assert [x.kind for x in a.applied] == ["haze", "clouds", "misregistration", "noise"]
    assert abs(a.applied[1].measured["cloud_fraction"] - 0.2) < 0.03
    with rasterio.open(a.output) as out:
        assert out.crs == scene.grid.crs and out.transform == scene.grid.transform
        assert list(out.descriptions) == scene.band_names
        assert out.tags()["eoagent_product"] == "synthetic_augmentation"
    assert Path(a.quicklook or "").is_file()
    b = augment_scene(scene, kinds, tmp_path / "b.tif", params=params, seed=7, quicklook=False)
    c = augment_scene(scene, kinds[1:], tmp_path / "c.tif", params=params, seed=7,
                      max_pixels=30_000, quicklook=False)  # fmt: skip
    d = augment_scene(scene, kinds[1:], tmp_path / "d.tif", params=params, seed=7, quicklook=False)
    read = [open_scene(r.output).read(["blue", "swir1"]) for r in (a, b, c, d)]
    assert all(np.array_equal(read[0][k], read[1][k], equal_nan=True) for k in read[0])
    for k in read[2]:  # 18 strips give the same clouds, haze and shifts as one pass
        np.testing.assert_allclose(read[2][k], read[3][k], atol=1e-5)


def test_optical_effects_refuse_sar(tmp_path: Path) -> None:
    from tests.conftest import sample

    sar = open_scene(sample("sar/spain_flood_2019_s1.tif"))
    with pytest.raises(BandError, match="optical"):
        augment_scene(sar, ["haze"], tmp_path / "x.tif")
