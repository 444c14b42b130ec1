"""Writing results: GeoTIFF (COG where GDAL allows), GeoJSON polygons, PNG quicklooks.

Every write goes to a temporary file in the destination folder and is renamed into
place only when complete, so a failed or killed run never leaves a partial file and
never clobbers the previous good one.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import rasterio.shutil
import rasterio.warp
from PIL import Image
from pyproj import Geod, Transformer
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from tools.errors import ArgumentError, EmptyResultError
from tools.raster import Grid, Scene

_GEOD = Geod(ellps="WGS84")


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; move it onto `dest` only on success."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(dest)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dest.stem}.{os.getpid()}.", suffix=f".part{dest.suffix}", dir=dest.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; a result should be as readable as any file the
        # user creates, so apply the process umask as open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _remove_orphans(dest: Path) -> None:
    """Delete temporary files left beside `dest` by writers that were killed (their
    process id, part of the name, no longer exists)."""
    for part in dest.parent.glob(f".{glob.escape(dest.stem)}.*.part*"):
        pid = part.name[len(dest.stem) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                part.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_raster(
    dest: str | Path,
    grid: Grid,
    blocks: Iterable[tuple[Window, np.ndarray]] | np.ndarray,
    *,
    dtype: str = "float32",
    nodata: float | None = None,
    band_names: list[str] | None = None,
    tags: dict[str, str] | None = None,
    cog: bool = True,
) -> Path:
    """Write a raster on `grid` from a full array or a stream of (window, array) blocks.

    Arrays are (rows, cols) or (bands, rows, cols). The result keeps the grid's CRS and
    transform; with `cog` it is converted to a Cloud-Optimized GeoTIFF (with overviews).
    """
    dest = Path(dest)
    if isinstance(blocks, np.ndarray):
        blocks = [(Window(0, 0, grid.width, grid.height), blocks)]
    iterator = iter(blocks)
    first = next(iterator, None)
    if first is None:
        raise EmptyResultError("Nothing to write; the computation produced no pixels.")
    count = 1 if first[1].ndim == 2 else first[1].shape[0]
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": count,
        "dtype": dtype,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "BIGTIFF": "IF_SAFER",
        # a COG is re-encoded from the staging file, so compress only once, at the end
        "compress": "none" if cog else "deflate",
    }
    if grid.width < 512 or grid.height < 512:
        profile.update(tiled=False)
        profile.pop("blockxsize"), profile.pop("blockysize")
    with atomic_path(dest) as final_tmp:
        staging = final_tmp.with_name(final_tmp.name + ".gtiff") if cog else final_tmp
        try:
            with warnings.catch_warnings():
                # a PNG pair without CRS still gets a raster on its pixel grid
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                out = rasterio.open(staging, "w", **profile)
            with out:
                for window, data in itertools.chain([first], iterator):
                    arr = data if data.ndim == 3 else data[np.newaxis]
                    out.write(arr.astype(dtype, copy=False), window=window)
                if band_names:
                    for i, name in enumerate(band_names[:count], start=1):
                        out.set_band_description(i, name)
                if tags:
                    out.update_tags(**tags)
            if cog:
                _to_cog(staging, final_tmp)
        finally:
            if cog:
                with contextlib.suppress(FileNotFoundError):
                    staging.unlink()
    return dest


def _to_cog(src: Path, dest: Path) -> None:
    try:
        rasterio.shutil.copy(
            src,
            dest,
            driver="COG",
            compress="DEFLATE",
            predictor="YES",
            num_threads="ALL_CPUS",
            overview_resampling="NEAREST",
        )
    except Exception:  # GDAL without the COG driver: keep the tiled GeoTIFF
        os.replace(src, dest)


def mask_to_features(
    mask: np.ndarray,
    grid: Grid,
    *,
    values: np.ndarray | None = None,
    labels: dict[int, str] | None = None,
    min_pixels: int = 1,
) -> list[dict[str, Any]]:
    """Polygons of the True (or non-zero `values`) regions, in EPSG:4326 (RFC 7946),
    each with its class, pixel count and geodesic area in hectares."""
    values = mask.astype(np.uint8) if values is None else np.where(mask, values, 0).astype(np.int32)
    if not np.any(values):
        return []
    features = []
    # One transformer for all polygons: transform_geom per polygon re-creates the
    # PROJ pipeline each time (~7 ms per polygon in a State Plane CRS).
    to_lonlat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True) if grid.crs else None
    for geometry, value in rasterio.features.shapes(
        values, mask=values > 0, transform=grid.transform
    ):
        n_pixels = _polygon_pixels(geometry, grid)
        if n_pixels < min_pixels:
            continue
        area_ha: float | None = None
        if to_lonlat is not None:
            rings = [_ring_lonlat(ring, to_lonlat) for ring in geometry["coordinates"]]
            geometry = {"type": "Polygon", "coordinates": rings}
            area_ha = round(abs(_GEOD.geometry_area_perimeter(_shape(geometry))[0]) / 1e4, 4)
        props: dict[str, Any] = {"value": int(value), "area_ha": area_ha, "pixels": n_pixels}
        if labels:
            props["class"] = labels.get(int(value), str(int(value)))
        features.append({"type": "Feature", "geometry": geometry, "properties": props})
    return features


def _ring_lonlat(ring: Any, transformer: Transformer) -> list[list[float]]:
    coords = np.asarray(ring, dtype=np.float64)
    lon, lat = transformer.transform(coords[:, 0], coords[:, 1])
    return np.column_stack([lon, lat]).tolist()


def _polygon_pixels(geometry: dict[str, Any], grid: Grid) -> int:
    ring = np.asarray(geometry["coordinates"][0])
    t = grid.transform
    x, y = ring[:, 0], ring[:, 1]
    planar = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    for hole in geometry["coordinates"][1:]:
        h = np.asarray(hole)
        planar -= 0.5 * abs(
            np.dot(h[:, 0], np.roll(h[:, 1], 1)) - np.dot(h[:, 1], np.roll(h[:, 0], 1))
        )
    return int(round(planar / abs(t.a * t.e - t.b * t.d)))


def _shape(geometry: dict[str, Any]) -> Any:
    from shapely.geometry import shape

    return shape(geometry)


def write_geojson(
    dest: str | Path, features: list[dict[str, Any]], properties: dict[str, Any] | None = None
) -> Path:
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if properties:
        collection["properties"] = properties
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(collection, separators=(",", ":")))
    return Path(dest)


# -- quicklooks ---------------------------------------------------------------


def preview_grid(grid: Grid, max_size: int = 1024) -> Grid:
    """A coarser grid over the same extent, at most `max_size` pixels on a side."""
    factor = max(grid.width, grid.height) / max_size
    if factor <= 1:
        return grid
    from affine import Affine

    t = grid.transform
    width, height = max(1, round(grid.width / factor)), max(1, round(grid.height / factor))
    sx, sy = grid.width / width, grid.height / height
    return Grid(grid.crs, Affine(t.a * sx, t.b * sy, t.c, t.d * sx, t.e * sy, t.f), width, height)


def scene_rgb(scene: Scene, grid: Grid | None = None) -> np.ndarray:
    """A display image (rows, cols, 3) in 0-1, true colour when possible, stretched
    between the 2nd and 98th percentiles of valid pixels."""
    view = scene if grid is None or grid.same_as(scene.grid) else scene.regridded(grid)
    if view.grid.crs is None and grid is not None and not grid.same_as(scene.grid):
        view = scene  # cannot warp a non-georeferenced image; draw it full size
    if view.has("red", "green", "blue"):
        bands = view.read(["red", "green", "blue"])
        stack = np.stack([bands["red"], bands["green"], bands["blue"]], axis=-1)
    elif view.has("VV"):
        vv = view.read_band("VV")
        stack = np.repeat(vv[..., np.newaxis], 3, axis=-1)
    else:
        first = view.read_band(view.band_names[0])
        stack = np.repeat(first[..., np.newaxis], 3, axis=-1)
    valid = np.isfinite(stack)
    if not valid.any():
        return np.zeros(stack.shape, dtype=np.float32)
    lo, hi = np.nanpercentile(stack, [2, 98])
    out = np.clip((stack - lo) / max(hi - lo, 1e-9), 0, 1)
    return np.nan_to_num(out, nan=0.0).astype(np.float32)


def write_quicklook(
    dest: str | Path,
    background: np.ndarray,
    overlays: Iterable[tuple[np.ndarray, tuple[int, int, int]]] = (),
    *,
    alpha: float = 0.55,
    outlines: Iterable[tuple[np.ndarray, tuple[int, int, int]]] = (),
) -> Path:
    """A PNG of `background` (rows, cols, 3 in 0-1) with coloured masks blended over it
    and, optionally, outlines (boolean masks drawn as their boundary pixels)."""
    image = (np.clip(background, 0, 1) * 255).astype(np.float32)
    for mask, colour in overlays:
        m = _fit(mask, image.shape[:2])
        image[m] = (1 - alpha) * image[m] + alpha * np.asarray(colour, dtype=np.float32)
    for mask, colour in outlines:
        m = _fit(mask, image.shape[:2])
        from scipy.ndimage import binary_erosion

        edge = m & ~binary_erosion(m)
        image[edge] = colour
    with atomic_path(dest) as tmp:
        Image.fromarray(image.astype(np.uint8)).save(tmp, format="PNG")
    return Path(dest)


def _fit(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.shape == shape:
        return mask
    rows = (np.arange(shape[0]) * mask.shape[0] / shape[0]).astype(int)
    cols = (np.arange(shape[1]) * mask.shape[1] / shape[1]).astype(int)
    return mask[np.ix_(rows, cols)]


def result_paths(out: str | Path | None) -> tuple[Path, Path, Path] | None:
    """(raster, geojson, quicklook) of a mapped result, side by side; None without `out`."""
    if out is None:
        return None
    path = Path(out)
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise ArgumentError(
            f"Output {path} must be a GeoTIFF path ending in .tif; the GeoJSON "
            "polygons and PNG quicklook are written beside it."
        )
    return path, path.with_suffix(".geojson"), path.with_suffix(".png")
