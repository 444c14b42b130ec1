"""Synthetic imagery (`synthesize_image`): text-to-image with a Stable Diffusion pipeline
from a local folder, or physics-based augmentation of a real scene.

Augmentation keeps the scene's CRS, transform (changed only by a scale change, over the
same bounds) and band names, and streams the scene in row strips so memory stays flat:
the clouds and haze come from fields defined on the whole grid (tools.augment), so the
strips join without seams. Effects are applied in the order light meets them: haze in
the boundary layer, clouds above it, then the sensor: coarser sampling, band
misregistration, noise. The output is a float32 reflectance GeoTIFF (NaN = nodata) with
a PNG quicklook beside it, tagged as synthetic.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from affine import Affine
from pydantic import BaseModel, Field
from rasterio.windows import Window

from tools import augment
from tools.errors import ArgumentError, BandError
from tools.export import preview_grid, scene_rgb, write_quicklook, write_raster
from tools.raster import DEFAULT_WINDOW_PIXELS, SAR_NAMES, Grid, Scene, open_scene

AugmentKind = Literal["haze", "clouds", "noise", "scale", "misregistration"]
ORDER: tuple[AugmentKind, ...] = ("haze", "clouds", "scale", "misregistration", "noise")
DIFFUSION_SETTING = "EOAGENT_DIFFUSION_MODEL_PATH"
SPLINE_HALO = 8  # rows of context for the cubic-spline prefilter of a shifted strip


class AugmentParams(BaseModel):
    """Parameters of the augmentations; each applies only to its own kind."""

    haze_strength: float = Field(
        default=0.5, ge=0, le=1, description="haze: 0 clear, 1 thick (optical depth 1.5 at 550 nm)"
    )
    cloud_cover: float = Field(default=0.3, ge=0, le=1, description="clouds: fraction covered")
    sun_azimuth_deg: float = Field(default=150.0, ge=0, lt=360, description="clouds: shadow")
    sun_elevation_deg: float = Field(default=45.0, gt=0, le=90, description="clouds: shadow")
    cloud_height_m: float = Field(default=1500.0, ge=0, le=15000, description="clouds: shadow")
    snr: float = Field(default=100.0, gt=0, le=10000, description="noise: SNR at reflectance 0.1")
    scale_factor: float = Field(
        default=2.0, ge=1, le=64, description="scale: new pixel size / old pixel size"
    )
    max_shift_px: float = Field(
        default=0.5, ge=0, le=10, description="misregistration: largest random shift, pixels"
    )
    band_shifts: dict[str, tuple[float, float]] | None = Field(
        default=None,
        description="misregistration: explicit (rows, cols) shift per band name; others stay",
    )


class AppliedAugmentation(BaseModel):
    kind: AugmentKind
    parameters: dict[str, Any]
    measured: dict[str, Any] = Field(default_factory=dict)


class SynthesisResult(BaseModel):
    """A synthetic image and how it was made. Synthetic: not an observation."""

    mode: Literal["text_to_image", "augment"]
    output: str = Field(description="GeoTIFF (augment) or PNG/GeoTIFF (text_to_image)")
    quicklook: str | None = None
    width: int
    height: int
    crs: str | None = None
    resolution: list[float] | None = None
    bands: list[str] = Field(default_factory=list)
    applied: list[AppliedAugmentation] = Field(default_factory=list)
    prompt: str | None = None
    seed: int
    steps: int | None = None
    model: str | None = None
    notes: list[str] = Field(default_factory=list)


# -- augmentation of a scene -------------------------------------------------------


def band_wavelengths(scene: Scene) -> list[float | None]:
    """Centre wavelength (nm) of each band, from the sensor when known; None for SAR
    and bands that cannot be placed in the spectrum."""
    by_name: dict[str, float] = {}
    if scene.sensor is not None:
        by_name = {b.name: b.wavelength_nm for b in scene.sensor.bands if b.wavelength_nm}
    return [
        None if name in SAR_NAMES else by_name.get(name, augment.WAVELENGTH_NM.get(name))
        for name in scene.band_names
    ]


def _pixel_size_m(grid: Grid) -> float:
    area = grid.pixel_area_m2(Window(grid.width // 2, grid.height // 2, 1, 1))
    if area is None:
        return float(max(grid.resolution))  # no CRS: pixels, taken as metres
    return math.sqrt(float(np.mean(area)))


def coarser_grid(grid: Grid, factor: float) -> Grid:
    """The grid `factor` times coarser over the same bounds."""
    width, height = augment.coarser_size(grid.width, grid.height, factor)
    sx, sy = grid.width / width, grid.height / height
    t = grid.transform
    return Grid(grid.crs, Affine(t.a * sx, t.b * sy, t.c, t.d * sx, t.e * sy, t.f), width, height)


class _Plan:
    """Everything decided once for the whole scene, before the strips are processed."""

    def __init__(self, scene: Scene, kinds: list[AugmentKind], p: AugmentParams, seed: int):
        self.scene, self.kinds, self.p, self.seed = scene, kinds, p, seed
        self.names = scene.band_names
        self.wavelengths = band_wavelengths(scene)
        shape = scene.grid.shape
        optical = [w for w in self.wavelengths if w is not None]
        if {"haze", "clouds"} & set(kinds) and not optical:
            raise BandError(
                f"haze and clouds are optical effects, but {Path(scene.source).name} has no "
                f"optical band ({', '.join(self.names)}); use noise, scale or misregistration."
            )
        self.haze = augment.haze_field(shape, seed) if "haze" in kinds else None
        self.cloud = augment.CloudLayer(shape, p.cloud_cover, seed) if "clouds" in kinds else None
        self.shadow = (0.0, 0.0)
        if self.cloud is not None:
            self.shadow = augment.shadow_offset_px(
                p.sun_azimuth_deg, p.sun_elevation_deg, p.cloud_height_m,
                _pixel_size_m(scene.grid),
            )  # fmt: skip
        self.out_grid = coarser_grid(scene.grid, p.scale_factor) if "scale" in kinds else scene.grid
        if "scale" in kinds:
            self.row_w = augment.area_weights(scene.grid.height, self.out_grid.height)
            self.col_w = augment.area_weights(scene.grid.width, self.out_grid.width)
        self.shifts = self._shifts() if "misregistration" in kinds else None
        biggest = max((max(abs(a), abs(b)) for a, b in self.shifts or [(0, 0)]), default=0)
        self.halo = int(math.ceil(biggest)) + SPLINE_HALO if self.shifts else 0
        self.cloud_pixels = self.shadow_pixels = self.total_pixels = self._counted_to = 0

    def _shifts(self) -> list[tuple[float, float]]:
        if self.p.band_shifts:
            unknown = sorted(set(self.p.band_shifts) - set(self.names))
            if unknown:
                raise BandError(
                    f"band_shifts names {', '.join(unknown)}, not bands of the scene "
                    f"({', '.join(self.names)})."
                )
            return [tuple(self.p.band_shifts.get(n, (0.0, 0.0))) for n in self.names]  # type: ignore[misc]
        reference = self.names.index("red") if "red" in self.names else 0
        return augment.random_band_shifts(
            len(self.names), self.p.max_shift_px, self.seed, reference
        )

    def strips(self, max_pixels: int) -> Iterator[tuple[Window, np.ndarray]]:
        out = self.out_grid
        rows = max(1, max_pixels // max(out.width, 1))
        for o0 in range(0, out.height, rows):
            o1 = min(out.height, o0 + rows)
            yield Window(0, o0, out.width, o1 - o0), self._strip(o0, o1)

    def _strip(self, o0: int, o1: int) -> np.ndarray:
        e0, e1 = max(0, o0 - self.halo), min(self.out_grid.height, o1 + self.halo)
        if "scale" in self.kinds:
            block_w = self.row_w[e0:e1]
            used = np.unique(block_w.indices)
            i0, i1 = int(used.min()), int(used.max()) + 1
        else:
            i0, i1 = e0, e1
        data = self._read(i0, i1)
        data = self._atmosphere(data, i0)
        if "scale" in self.kinds:
            data = augment.coarsen(
                data, self.p.scale_factor, row_weights=block_w[:, i0:i1], col_weights=self.col_w
            )
        if self.shifts is not None:
            data = augment.misregister(data, self.shifts)
        data = data[:, o0 - e0 : o0 - e0 + (o1 - o0)]
        if "noise" in self.kinds:
            placement = augment.Placement(o0, 0, self.out_grid.shape)
            data = augment.add_noise(data, self.p.snr, seed=self.seed, placement=placement)
        return data

    def _read(self, r0: int, r1: int) -> np.ndarray:
        window = Window(0, r0, self.scene.grid.width, r1 - r0)
        bands = self.scene.read(self.names, window)
        return np.stack([bands[n] for n in self.names])

    def _atmosphere(self, data: np.ndarray, r0: int) -> np.ndarray:
        placement = augment.Placement(r0, 0, self.scene.grid.shape)
        if self.haze is not None:
            data = augment.add_haze(
                data, self.wavelengths, strength=self.p.haze_strength, seed=self.seed,
                placement=placement, field_=self.haze,
            )  # fmt: skip
        if self.cloud is not None:
            data, alpha, shade = augment.add_clouds(
                data, self.wavelengths, cover=self.p.cloud_cover, seed=self.seed,
                shadow_offset=self.shadow, placement=placement, layer=self.cloud,
            )  # fmt: skip
            # strips overlap by the halo; count each input row once
            first = max(r0, self._counted_to)
            self.cloud_pixels += int(np.count_nonzero(alpha[first - r0 :] > 0))
            self.shadow_pixels += int(np.count_nonzero(shade[first - r0 :] > 0))
            self.total_pixels += alpha[first - r0 :].size
            self._counted_to = max(self._counted_to, r0 + data.shape[1])
        return data

    def applied(self) -> list[AppliedAugmentation]:
        p, done = self.p, []
        for kind in ORDER:
            if kind not in self.kinds:
                continue
            params: dict[str, Any]
            measured: dict[str, Any] = {}
            if kind == "haze":
                params = {"strength": p.haze_strength, "tau550": 1.5 * p.haze_strength}
            elif kind == "clouds":
                params = {
                    "cover": p.cloud_cover, "sun_azimuth_deg": p.sun_azimuth_deg,
                    "sun_elevation_deg": p.sun_elevation_deg, "cloud_height_m": p.cloud_height_m,
                }  # fmt: skip
                total = max(self.total_pixels, 1)
                measured = {
                    "cloud_fraction": round(self.cloud_pixels / total, 4),
                    "shadow_fraction": round(self.shadow_pixels / total, 4),
                    "shadow_offset_px": [round(v, 2) for v in self.shadow],
                }
            elif kind == "scale":
                params = {"factor": p.scale_factor}
                measured = {"resolution": list(self.out_grid.resolution)}
            elif kind == "misregistration":
                params = {"max_shift_px": p.max_shift_px} if not p.band_shifts else {}
                measured = {
                    "shifts_px": {
                        n: [round(a, 3), round(b, 3)]
                        for n, (a, b) in zip(self.names, self.shifts or [], strict=True)
                    }
                }
            else:
                params = {"snr": p.snr, "reference_reflectance": augment.NOISE_REFERENCE}
            done.append(AppliedAugmentation(kind=kind, parameters=params, measured=measured))
        return done


def augment_scene(
    scene: Scene,
    kinds: list[AugmentKind],
    out: str | Path,
    *,
    params: AugmentParams | None = None,
    seed: int = 0,
    max_pixels: int = DEFAULT_WINDOW_PIXELS,
    quicklook: bool = True,
) -> SynthesisResult:
    """Apply the augmentations `kinds` to `scene` and write the result to `out` (.tif)."""
    out = Path(out)
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise ArgumentError(f"Augmented scenes are written as GeoTIFF; {out} must end in .tif.")
    unknown = [k for k in kinds if k not in ORDER]
    if not kinds or unknown:
        raise ArgumentError(
            f"Choose augmentations among {', '.join(ORDER)} (got {', '.join(kinds) or 'none'})."
        )
    ordered = [k for k in ORDER if k in kinds]
    plan = _Plan(scene, ordered, params or AugmentParams(), seed)
    grid = plan.out_grid
    record = plan.applied()  # parameters only; measurements are filled after writing
    write_raster(
        out,
        grid,
        plan.strips(max_pixels),
        dtype="float32",
        nodata=float("nan"),
        band_names=plan.names,
        tags={
            "eoagent_product": "synthetic_augmentation",
            "source": Path(scene.source).name,
            "augmentations": json.dumps([a.model_dump() for a in record]),
            "seed": str(seed),
        },
    )
    notes = ["Synthetic: physics-based augmentation of a real scene, not an observation."]
    skipped = [n for n, w in zip(plan.names, plan.wavelengths, strict=True) if w is None]
    if skipped and {"haze", "clouds"} & set(ordered):
        notes.append(f"No wavelength for {', '.join(skipped)}: haze and clouds left them as is.")
    look = None
    if quicklook:
        with open_scene(out) as written:
            look = write_quicklook(
                out.with_suffix(".png"), scene_rgb(written, preview_grid(written.grid, 1024))
            )
    return SynthesisResult(
        mode="augment",
        output=str(out),
        quicklook=str(look) if look else None,
        width=grid.width,
        height=grid.height,
        crs=grid.crs.to_string() if grid.crs else None,
        resolution=list(grid.resolution),
        bands=plan.names,
        applied=plan.applied(),
        seed=seed,
        notes=notes,
    )


# -- text to image -----------------------------------------------------------------


def diffusion_problem(model_path: str | Path | None) -> str | None:
    """Why the diffusion pipeline cannot be loaded, in one line; None when it can."""
    if model_path is None or str(model_path).strip() == "":
        return (
            f"No text-to-image model configured: set {DIFFUSION_SETTING} to a local Stable "
            "Diffusion pipeline folder (model_index.json, unet/, vae/, text_encoder/, "
            "tokenizer/, scheduler/)."
        )
    if not (Path(model_path).expanduser() / "model_index.json").is_file():
        return (
            f"{DIFFUSION_SETTING}={model_path} is not a diffusers pipeline folder (no "
            "model_index.json); save one with pipeline.save_pretrained(folder)."
        )
    return None


@functools.lru_cache(maxsize=1)
def _pipeline(path: str, mtime: float, device: str) -> Any:
    try:
        import torch
        from diffusers import StableDiffusionPipeline
    except ImportError as err:
        raise ArgumentError(
            "Text-to-image needs diffusers: pip install 'diffusers>=0.42,<0.43'"
        ) from err
    from diffusers.utils import logging as diffusers_logging

    dtype = torch.float16 if device == "cuda" else torch.float32
    diffusers_logging.disable_progress_bar()  # a tool's output is its result, not bars
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            path, dtype=dtype, safety_checker=None, requires_safety_checker=False,
            local_files_only=True,
        )  # fmt: skip
    except (OSError, ValueError, KeyError) as err:
        raise ArgumentError(
            f"Could not load the diffusion pipeline in {path} ({' '.join(str(err).split())[:200]}"
            f"); check {DIFFUSION_SETTING}."
        ) from err
    finally:
        diffusers_logging.enable_progress_bar()
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def text_to_image(
    prompt: str,
    out: str | Path,
    *,
    model_path: str | Path | None,
    steps: int = 25,
    guidance_scale: float = 7.5,
    width: int = 512,
    height: int = 512,
    seed: int = 0,
    negative_prompt: str | None = None,
    device: str = "auto",
) -> SynthesisResult:
    """Generate an image from `prompt` with the Stable Diffusion pipeline in
    `model_path`, written to `out` (.png, or .tif without georeferencing)."""
    from tools.classify import ModelWeightsError, resolve_device

    problem = diffusion_problem(model_path)
    if problem:
        raise ModelWeightsError(problem)
    if not prompt or not prompt.strip():
        raise ArgumentError("text_to_image needs a prompt describing the image.")
    if width % 8 or height % 8 or not 64 <= width <= 2048 or not 64 <= height <= 2048:
        raise ArgumentError(
            f"width and height must be multiples of 8 in 64-2048 (got {width}x{height})."
        )
    if not 1 <= steps <= 200:
        raise ArgumentError(f"steps must be within 1-200 (got {steps}).")
    out = Path(out)
    if out.suffix.lower() not in (".png", ".tif", ".tiff"):
        raise ArgumentError(f"{out} must end in .png or .tif.")
    import torch

    path = Path(str(model_path)).expanduser().resolve()
    dev = resolve_device(device)
    pipe = _pipeline(str(path), (path / "model_index.json").stat().st_mtime, dev)
    generator = torch.Generator(device=dev).manual_seed(seed)
    images = pipe(
        prompt, negative_prompt=negative_prompt, num_inference_steps=steps,
        guidance_scale=guidance_scale, width=width, height=height, generator=generator,
        output_type="np",
    ).images  # fmt: skip
    rgb = np.clip(np.asarray(images[0], dtype=np.float32), 0, 1)
    if out.suffix.lower() == ".png":
        write_quicklook(out, rgb)
    else:
        pixels = (rgb * 255).round().astype(np.uint8).transpose(2, 0, 1)
        grid = Grid(None, Affine.identity(), rgb.shape[1], rgb.shape[0])
        write_raster(
            out, grid, pixels, dtype="uint8", band_names=["red", "green", "blue"], cog=False,
            tags={"eoagent_product": "synthetic_text_to_image", "prompt": prompt},
        )  # fmt: skip
    return SynthesisResult(
        mode="text_to_image",
        output=str(out),
        width=rgb.shape[1],
        height=rgb.shape[0],
        bands=["red", "green", "blue"],
        prompt=prompt,
        seed=seed,
        steps=steps,
        model=path.name,
        notes=["Synthetic: generated by a diffusion model, not an observation; no CRS."],
    )


def synthesize_image(
    out: str | Path,
    *,
    scene: Scene | None = None,
    augmentations: list[AugmentKind] | None = None,
    prompt: str | None = None,
    params: AugmentParams | None = None,
    seed: int = 0,
    model_path: str | Path | None = None,
    **text_options: Any,
) -> SynthesisResult:
    """Augment `scene` when given (with `augmentations`), else generate from `prompt`."""
    if scene is not None:
        return augment_scene(scene, list(augmentations or []), out, params=params, seed=seed)
    if prompt:
        return text_to_image(prompt, out, model_path=model_path, seed=seed, **text_options)
    raise ArgumentError(
        "synthesize_image needs a scene to augment (with augmentations) or a text prompt."
    )
