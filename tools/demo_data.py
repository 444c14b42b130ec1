"""A bundled example: a generated Sentinel-2 L2A pre/post pair (and a Sentinel-1 post
scene) of a river valley that floods while a fire burns the hills.

Generated, not shipped: the surface reflectances are typical library spectra for each
cover type (water, turbid flood water, crops, bare soil, built-up, burned ground) with
field-to-field variation and sensor noise, on a real UTM grid. Because the truth is
known exactly, the demo and the tests can check the tools' areas against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

S2_BAND_IDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")

# Typical surface reflectance per band (B1..B12 without B10), from the shapes of the
# USGS/ASTER spectral library curves resampled to Sentinel-2 bands.
SPECTRA: dict[str, tuple[float, ...]] = {
    "water": (0.050, 0.045, 0.040, 0.025, 0.020, 0.015, 0.012, 0.010, 0.008, 0.005, 0.004, 0.003),
    "flood": (0.070, 0.070, 0.085, 0.075, 0.060, 0.040, 0.035, 0.030, 0.025, 0.015, 0.010, 0.008),
    "crop": (0.030, 0.040, 0.080, 0.040, 0.120, 0.300, 0.380, 0.400, 0.420, 0.400, 0.200, 0.100),
    "soil": (0.080, 0.100, 0.140, 0.180, 0.210, 0.230, 0.250, 0.260, 0.270, 0.280, 0.330, 0.280),
    "urban": (0.100, 0.110, 0.130, 0.140, 0.160, 0.170, 0.180, 0.190, 0.190, 0.180, 0.220, 0.200),
    "burned": (0.040, 0.040, 0.050, 0.060, 0.080, 0.090, 0.100, 0.100, 0.110, 0.110, 0.160, 0.170),
}
CLASSES = tuple(SPECTRA)
# Sentinel-1 VV backscatter (dB) per cover type: open water is a specular reflector.
VV_DB = {
    "water": -21.0,
    "flood": -19.0,
    "crop": -10.0,
    "soil": -12.0,
    "urban": -5.0,
    "burned": -13.0,
}

SIZE = 400
PIXEL_M = 10.0
TRANSFORM = Affine(PIXEL_M, 0, 640000, 0, -PIXEL_M, 4230000)  # UTM 30N, southern Spain
CRS = "EPSG:32630"
# Processing baseline 04.00+ products carry a +1000 DN offset (removed when read).
BASELINE_OFFSET_DN = 1000


@dataclass(frozen=True)
class DemoScenes:
    folder: Path
    pre: Path
    post: Path
    post_sar: Path
    pre_cover: np.ndarray  # class index per pixel, CLASSES order
    post_cover: np.ndarray

    def truth_mask(self, cover: str, when: str = "post") -> np.ndarray:
        classes = self.post_cover if when == "post" else self.pre_cover
        return classes == CLASSES.index(cover)


def _cover_maps(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    cover = np.full((SIZE, SIZE), CLASSES.index("crop"), dtype=np.uint8)
    # A patchwork of fields: every 40x40 block is crop or bare soil.
    blocks = rng.random((SIZE // 40, SIZE // 40)) < 0.35
    cover[np.kron(blocks, np.ones((40, 40), dtype=bool))] = CLASSES.index("soil")
    # A town in the north-east.
    cover[40:120, 260:360] = CLASSES.index("urban")
    # A meandering river through the valley floor.
    centre = 200 + 30 * np.sin(cols / 45.0)
    river = np.abs(rows - centre) < 6
    cover[river] = CLASSES.index("water")
    post = cover.copy()
    # The flood spreads across the floodplain fields (but not into the town).
    plain = (np.abs(rows - centre) < 38) & ~river & (cover != CLASSES.index("urban"))
    plain &= cols < 330
    post[plain] = CLASSES.index("flood")
    # A fire scar on the southern hills.
    scar = ((rows - 330) / 45.0) ** 2 + ((cols - 110) / 80.0) ** 2 < 1
    scar &= post == CLASSES.index("crop")
    post[scar] = CLASSES.index("burned")
    return cover, post


def _reflectance(cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    spectra = np.array([SPECTRA[c] for c in CLASSES], dtype=np.float32)  # (classes, bands)
    refl = spectra[cover].transpose(2, 0, 1)  # (bands, rows, cols)
    # Field-to-field brightness variation and 2% sensor noise.
    field_gain = np.kron(rng.normal(1.0, 0.08, (SIZE // 40, SIZE // 40)), np.ones((40, 40)))
    refl = refl * field_gain[np.newaxis].astype(np.float32)
    refl *= rng.normal(1.0, 0.02, refl.shape).astype(np.float32)
    return np.clip(refl, 0.0005, 1.0)


def _write(
    path: Path, data: np.ndarray, descriptions: tuple[str, ...], dtype: str, nodata: float | None
) -> Path:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=SIZE,
        height=SIZE,
        count=data.shape[0],
        dtype=dtype,
        crs=CRS,
        transform=TRANSFORM,
        nodata=nodata,
        compress="deflate",
    ) as out:
        out.write(data.astype(dtype))
        for i, d in enumerate(descriptions, start=1):
            out.set_band_description(i, d)
    return path


def make_demo_scenes(folder: str | Path, seed: int = 7) -> DemoScenes:
    """Write the demo scenes into `folder` (idempotent for a given seed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pre_cover, post_cover = _cover_maps(rng)
    paths = []
    for name, date, cover in (
        ("pre", "20230801T105619", pre_cover),
        ("post", "20230904T105621", post_cover),
    ):
        dn = np.round(_reflectance(cover, rng) * 10000 + BASELINE_OFFSET_DN)
        path = folder / f"S2B_MSIL2A_{date}_N0509_demo_{name}.tif"
        paths.append(_write(path, dn, S2_BAND_IDS, "uint16", 0))
    vv = np.array([VV_DB[c] for c in CLASSES], dtype=np.float32)[post_cover]
    vh = vv - 7.0
    speckle = rng.normal(0.0, 1.0, (2, SIZE, SIZE)).astype(np.float32)
    sar = np.stack([vv, vh]) + speckle
    sar_path = _write(
        folder / "S1A_IW_GRDH_20230904_demo_post.tif", sar, ("VV", "VH"), "float32", None
    )
    return DemoScenes(folder, paths[0], paths[1], sar_path, pre_cover, post_cover)
