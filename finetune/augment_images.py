"""Degraded copies of the images of vision-language training examples.

The same physical models `synthesize_image` uses (tools/augment.py: haze, clouds with
shadows, sensor noise, band misregistration) are applied to each example's RGB image,
and the example is repeated with the degraded image and the same conversation, so a
fine-tuned VLM learns answers that hold up under the conditions real scenes bring.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from tools import augment

ImageAugmentation = Literal["haze", "clouds", "noise", "misregistration"]
RGB_WAVELENGTHS_NM = (650.0, 550.0, 470.0)  # red, green, blue centres


def degrade_rgb(image: np.ndarray, kind: ImageAugmentation, seed: int) -> np.ndarray:
    """An RGB image (rows, cols, 3) in 0-1, degraded by one physical effect."""
    bands = np.moveaxis(image.astype(np.float32), -1, 0)
    rng = np.random.default_rng([seed, 77])
    if kind == "haze":
        out = augment.add_haze(
            bands, RGB_WAVELENGTHS_NM, strength=float(rng.uniform(0.1, 0.4)), seed=seed
        )
    elif kind == "clouds":
        out, _, _ = augment.add_clouds(
            bands, RGB_WAVELENGTHS_NM, cover=float(rng.uniform(0.1, 0.4)), seed=seed
        )
    elif kind == "noise":
        out = augment.add_noise(bands, float(rng.uniform(20, 80)), seed=seed)
    elif kind == "misregistration":
        out = augment.misregister(bands, augment.random_band_shifts(3, 1.0, seed=seed, reference=1))
    else:
        raise ValueError(
            f"unknown augmentation {kind!r}; use haze, clouds, noise or misregistration"
        )
    return np.clip(np.moveaxis(out, 0, -1), 0.0, 1.0)


def augment_examples(
    examples: Sequence[dict[str, Any]],
    out_dir: str | Path,
    kinds: Sequence[ImageAugmentation] = ("haze", "clouds", "noise", "misregistration"),
    *,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """For each chat example with images (as `finetune.data.convert_llava` returns), one
    copy per augmentation kind with its images degraded and written under `out_dir`;
    ids get the kind as a suffix. Deterministic for a seed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    augmented = []
    for n, example in enumerate(examples):
        if not example.get("images"):
            continue
        for k, kind in enumerate(kinds):
            paths = []
            for i, source in enumerate(example["images"]):
                with Image.open(source) as img:
                    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
                degraded = degrade_rgb(rgb, kind, seed=seed * 100_003 + n * 101 + k * 7 + i)
                target = out_dir / f"{example['id']}_{kind}_{i}.png"
                Image.fromarray((degraded * 255 + 0.5).astype(np.uint8)).save(target)
                paths.append(str(target))
            augmented.append({**example, "id": f"{example['id']}_{kind}", "images": paths})
    return augmented
