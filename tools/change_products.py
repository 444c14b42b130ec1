"""What every change tool shares: class areas summed over windows, the class raster
written as it streams, its polygons and quicklook, and Otsu's threshold on a histogram.

Kept apart from `tools.change` so that the tools there read as the remote-sensing
recipes they are.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from pydantic import BaseModel, Field
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from tools.errors import EmptyResultError
from tools.export import (
    mask_to_features,
    preview_grid,
    result_paths,
    scene_rgb,
    write_geojson,
    write_quicklook,
    write_raster,
)
from tools.raster import Grid, Scene, check_same_grid


class ClassArea(BaseModel):
    """One class of a classified change map and how much ground it covers."""

    code: int = Field(description="pixel value of the class in the output raster")
    name: str
    pixels: int
    area_ha: float | None = Field(description="ground area; None when the grid has no CRS")
    fraction: float = Field(description="share of the valid (non-nodata) pixels")


class ChangeOutputs(BaseModel):
    """Files written for a change result (None when no `out` was given)."""

    output: str | None = None
    geojson: str | None = None
    quicklook: str | None = None


@dataclass
class ClassTally:
    """Pixel counts and ground areas per class code, summed over windows."""

    grid: Grid
    pixels: dict[int, int] = field(default_factory=dict)
    area_m2: dict[int, float] = field(default_factory=dict)

    def add(self, classes: np.ndarray, window: Window) -> None:
        area = self.grid.pixel_area_m2(window)
        for code in np.unique(classes):
            if code == 0:
                continue
            mask = classes == code
            self.pixels[int(code)] = self.pixels.get(int(code), 0) + int(np.count_nonzero(mask))
            if area is not None:
                m2 = self.grid.area_m2(mask, window) or 0.0
                self.area_m2[int(code)] = self.area_m2.get(int(code), 0.0) + m2

    @property
    def valid_pixels(self) -> int:
        return sum(self.pixels.values())

    def area_ha(self, *codes: int) -> float | None:
        if self.grid.crs is None:
            return None
        return round(sum(self.area_m2.get(c, 0.0) for c in codes) / 1e4, 4)

    def count(self, *codes: int) -> int:
        return sum(self.pixels.get(c, 0) for c in codes)

    def classes(self, names: dict[int, str]) -> list[ClassArea]:
        valid = max(self.valid_pixels, 1)
        return [
            ClassArea(
                code=code,
                name=name,
                pixels=self.count(code),
                area_ha=self.area_ha(code),
                fraction=round(self.count(code) / valid, 6),
            )
            for code, name in names.items()
        ]


def paired(pre: Scene, post: Scene, align: bool) -> Scene:
    """`pre` on `post`'s grid (GridMismatchError unless they match or `align`)."""
    return check_same_grid(pre, post, align=align)


def run_classification(
    blocks: Iterator[tuple[Window, np.ndarray]],
    grid: Grid,
    out: str | Path | None,
    tag: str,
) -> tuple[ClassTally, Path | None]:
    """Tally class areas over a stream of uint8 class blocks, writing them to `out`."""
    tally = ClassTally(grid)

    def counted() -> Iterator[tuple[Window, np.ndarray]]:
        for window, classes in blocks:
            tally.add(classes, window)
            yield window, classes

    paths = result_paths(out)
    if paths is None:
        for _ in counted():
            pass
        written = None
    else:
        with warnings.catch_warnings():
            # A pair without CRS (PNG) has an identity transform, which rasterio warns
            # about on write; the pixel grid is still what the user gave us.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            written = write_raster(
                paths[0],
                grid,
                counted(),
                dtype="uint8",
                nodata=0,
                band_names=[tag],
                tags={"eoagent_product": tag},
            )
    if tally.valid_pixels == 0:
        raise EmptyResultError(
            f"{tag}: no pixel is valid on both dates (all nodata/NaN); check "
            "that pre and post overlap and carry the needed bands."
        )
    return tally, written


def write_side_products(
    out: str | Path | None,
    post: Scene,
    labels: dict[int, str],
    colours: dict[int, tuple[int, int, int]],
    properties: dict[str, object],
    max_polygon_side: int = 2048,
) -> ChangeOutputs:
    """Polygons and quicklook of the classes in `colours`, read back from the raster.

    Reading the written raster (decimated through its overviews when large) keeps memory
    flat; polygons of a scene larger than `max_polygon_side` are traced on that coarser
    grid and say so in the file's properties.
    """
    paths = result_paths(out)
    if paths is None:
        return ChangeOutputs()
    raster, geojson, png = paths
    grid = post.grid
    poly_grid = preview_grid(grid, max_polygon_side)
    classes = _read_classes(raster, poly_grid)
    wanted = np.isin(classes, list(colours))
    features = mask_to_features(wanted, poly_grid, values=classes, labels=labels)
    if not poly_grid.same_as(grid):
        properties = {
            **properties,
            "note": f"polygons traced on a {poly_grid.width}x{poly_grid.height} "
            "preview of the class raster",
        }
    write_geojson(geojson, features, properties)
    view = preview_grid(grid, 1024)
    background = scene_rgb(post, view)
    small = classes if view.same_as(poly_grid) else _read_classes(raster, view)
    overlays = [(small == code, colour) for code, colour in colours.items()]
    write_quicklook(png, background, overlays)
    return ChangeOutputs(output=str(raster), geojson=str(geojson), quicklook=str(png))


def _read_classes(raster: Path, grid: Grid) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(raster) as src:
            return src.read(1, out_shape=grid.shape)


def otsu_from_histogram(counts: np.ndarray, edges: np.ndarray) -> float:
    """Otsu's (1979) threshold from a histogram: maximises between-class variance."""
    centres = (edges[:-1] + edges[1:]) / 2
    weights = counts.astype(np.float64)
    total = weights.sum()
    if total == 0:
        raise EmptyResultError("No valid pixels to choose a threshold from.")
    populated = np.flatnonzero(weights)
    if populated.size == 1:  # one value everywhere (e.g. pre = post): nothing lies above
        return float(edges[populated[0] + 1])
    w0 = np.cumsum(weights)
    w1 = total - w0
    m0 = np.cumsum(weights * centres)
    mean = m0[-1] / total
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean * w0 - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1
    # Two separated spikes leave a plateau of equal scores; its middle splits them fairly.
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float(edges[(best[0] + best[-1]) // 2 + 1])


def calibration_notes(pre: Scene, post: Scene) -> list[str]:
    notes: list[str] = []
    units = {b.units for s in (pre, post) for b in s.bands.values()}
    if units - {"reflectance", "dB"}:
        notes.append(
            "At least one scene is not calibrated reflectance (DN or unknown units): "
            "differences between dates are approximate."
        )
    if pre.sensor and post.sensor and pre.sensor.key != post.sensor.key:
        notes.append(
            f"Different sensors ({pre.sensor.title} vs {post.sensor.title}): band "
            "responses differ, so part of the difference may be instrumental."
        )
    if post.grid.crs is None:
        notes.append("No CRS: areas are reported as pixel counts only.")
    return notes
