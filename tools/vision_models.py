"""Learned vision models for detection, grounding and segmentation, loaded on first use.

Weights come from a local folder or a hub id named in the settings (`detector_model`,
`grounding_model`, `sam_model`, i.e. EOAGENT_DETECTOR_MODEL, ...). Nothing is loaded at
import: the first call loads the model and its processor through transformers and keeps
them for the life of the process. Without weights a tool raises `WeightsNotConfigured`,
one line naming the setting to fill.

Also here: turning any scene (8-bit photo, multispectral reflectance, SAR) into the 8-bit
RGB tiles these models expect, with one contrast stretch for the whole scene so that
tiles of one scene look alike to the model.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from rasterio.windows import Window

from tools.errors import EOError, InputFileError, one_line
from tools.raster import Scene

Role = Literal["detector", "grounding", "sam"]

# What each setting should hold, for the one-line error when it is empty.
SETTINGS: dict[str, str] = {
    "detector_model": "an OWLv2 or Grounding DINO checkpoint (e.g. "
    "google/owlv2-base-patch16-ensemble or IDEA-Research/grounding-dino-tiny)",
    "grounding_model": "a Grounding DINO checkpoint (e.g. IDEA-Research/grounding-dino-tiny); "
    "detector_model serves when it is empty",
    "sam_model": "a SAM checkpoint (e.g. facebook/sam-vit-base)",
}
DETECTION_TYPES = ("owlv2", "owlvit", "grounding-dino", "mm-grounding-dino", "llmdet")
# Pixels read at once to measure the contrast stretch of a large scene.
_STRETCH_SAMPLE_SIDE = 1024


class WeightsNotConfigured(EOError):
    """A learned model is needed and its setting is empty."""


class WeightsError(EOError):
    """Weights are configured but cannot be loaded or are of the wrong kind."""


def weights_missing(setting: str, tool: str, alternative: str = "") -> WeightsNotConfigured:
    env = f"EOAGENT_{setting.upper()}"
    what = SETTINGS.get(setting, "a model checkpoint")
    extra = f" {alternative}" if alternative else ""
    return WeightsNotConfigured(
        f"{tool} needs model weights: set {env} (settings.{setting}) to a local folder or hub "
        f"id of {what}.{extra}"
    )


def configured(setting: str) -> str | None:
    """The value of a model setting: the Settings field when it exists, else the
    EOAGENT_ environment variable (so the tools work before the field is added)."""
    value: Any = None
    try:
        from agent.settings import Settings

        value = getattr(Settings(), setting, None)
    except Exception:  # no agent package (tools used alone) or an invalid .env
        value = None
    if value in (None, ""):
        value = os.environ.get(f"EOAGENT_{setting.upper()}")
    return str(value) if value not in (None, "") else None


def device_name() -> str:
    import torch

    choice = "auto"
    try:
        from agent.settings import Settings

        choice = Settings().device
    except Exception:
        choice = os.environ.get("EOAGENT_DEVICE", "auto")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


@dataclass(frozen=True)
class VisionModel:
    """A loaded model, its processor and what kind it is."""

    kind: str  # config.model_type: owlv2, owlvit, grounding-dino, sam
    model: Any
    processor: Any
    source: str
    device: str

    @property
    def is_grounding_dino(self) -> bool:
        return "grounding" in self.kind or self.kind == "llmdet"


def load(source: str | os.PathLike[str], role: Role) -> VisionModel:
    """The model at `source` (folder or hub id), loaded once per process and role."""
    return _load_cached(str(source), role, device_name())


@functools.lru_cache(maxsize=4)
def _load_cached(source: str, role: Role, device: str) -> VisionModel:
    from transformers import AutoConfig, AutoProcessor

    try:
        config = AutoConfig.from_pretrained(source)
        processor = AutoProcessor.from_pretrained(source)
        if role == "sam":
            from transformers import SamModel

            if config.model_type != "sam":
                raise WeightsError(
                    f"{source} holds a {config.model_type} model, not SAM; point "
                    "EOAGENT_SAM_MODEL at a SAM checkpoint (e.g. facebook/sam-vit-base)."
                )
            model = SamModel.from_pretrained(source)
        else:
            from transformers import AutoModelForZeroShotObjectDetection

            if config.model_type not in DETECTION_TYPES:
                setting = (
                    "EOAGENT_DETECTOR_MODEL" if role == "detector" else ("EOAGENT_GROUNDING_MODEL")
                )
                raise WeightsError(
                    f"{source} holds a {config.model_type} model, not an open-vocabulary "
                    f"detector ({', '.join(DETECTION_TYPES)}); point {setting} at one."
                )
            model = AutoModelForZeroShotObjectDetection.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise WeightsError(
            f"Could not load model weights from '{source}': {one_line(str(exc))[:300]}. Use a "
            "local folder with config.json, the weights and the processor files (hub ids "
            "work only where the hub or its cache is reachable)."
        ) from exc
    model = model.to(device).eval()  # type: ignore[arg-type]
    return VisionModel(config.model_type, model, processor, source, device)


# -- scenes as 8-bit RGB ------------------------------------------------------------------


@dataclass(frozen=True)
class Stretch:
    """A linear stretch of the display bands to 0-255, the same for every tile."""

    bands: tuple[str, str, str]
    low: float
    high: float


def display_stretch(scene: Scene) -> Stretch:
    """Which bands show the scene and how to stretch them: 8-bit photos as stored,
    anything else between the 2nd and 98th percentiles of a sample of the scene."""
    if scene.has("red", "green", "blue"):
        bands: tuple[str, str, str] = ("red", "green", "blue")
    elif scene.has("VV"):
        bands = ("VV", "VV", "VV")
    else:
        first = scene.band_names[0]
        bands = (first, first, first)
    if all(scene.bands[b].units == "DN" and scene.bands[b].scale == 1 / 255 for b in bands):
        return Stretch(bands, 0.0, 1.0)
    grid = scene.grid
    side = _STRETCH_SAMPLE_SIDE
    window = Window(
        max(0, (grid.width - side) // 2),
        max(0, (grid.height - side) // 2),
        min(side, grid.width),
        min(side, grid.height),
    )
    data = scene.read(list(dict.fromkeys(bands)), window)
    values = np.concatenate([v[np.isfinite(v)] for v in data.values()])
    if values.size == 0:
        return Stretch(bands, 0.0, 1.0)
    low, high = np.percentile(values, [2, 98])
    return Stretch(bands, float(low), float(max(high, low + 1e-6)))


def read_rgb(scene: Scene, window: Window, stretch: Stretch) -> np.ndarray:
    """The window as a (rows, cols, 3) uint8 image; nodata is black."""
    data = scene.read(list(dict.fromkeys(stretch.bands)), window)
    stack = np.stack([data[b] for b in stretch.bands], axis=-1)
    scaled = (stack - stretch.low) / (stretch.high - stretch.low)
    return (np.clip(np.nan_to_num(scaled, nan=0.0), 0, 1) * 255).round().astype(np.uint8)


def check_rgb_scene(scene: Scene, tool: str) -> None:
    if scene.grid.width < 2 or scene.grid.height < 2:
        raise InputFileError(
            f"{tool}: the scene is {scene.grid.width}x{scene.grid.height} px, too small for "
            "a vision model; use a larger scene."
        )
