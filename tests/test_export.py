"""Result writing: streamed (memory-flat), atomic, georeferenced."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from tools.export import write_raster
from tools.raster import Grid


def test_write_raster_streams_blocks_without_holding_them(tmp_path: Path) -> None:
    width, rows, n_blocks = 2048, 512, 40  # 40 blocks of 4 MiB: 160 MiB in all
    grid = Grid(None, Affine(1, 0, 0, 0, -1, 0), width, rows * n_blocks)

    def blocks() -> Iterator[tuple[Window, np.ndarray]]:
        for i in range(n_blocks):
            yield Window(0, i * rows, width, rows), np.full((rows, width), i, dtype=np.float32)

    tracemalloc.start()
    try:
        write_raster(tmp_path / "big.tif", grid, blocks(), cog=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.0f} MiB: blocks were held, not streamed"
    with rasterio.open(tmp_path / "big.tif") as ds:
        assert ds.read(1, window=Window(0, 39 * rows, 4, 1))[0, 0] == 39


def test_cog_keeps_crs_and_transform(tmp_path: Path) -> None:
    transform = Affine(10, 0, 500000, 0, -10, 4200000)
    grid = Grid(rasterio.crs.CRS.from_epsg(32630), transform, 600, 600)
    data = np.arange(600 * 600, dtype=np.float32).reshape(600, 600)
    out = write_raster(tmp_path / "cog.tif", grid, data, nodata=np.nan, band_names=["ndvi"])
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 32630 and ds.transform == transform
        assert ds.descriptions == ("ndvi",) and ds.overviews(1)
        np.testing.assert_array_equal(ds.read(1), data)
    assert not list(tmp_path.glob(".*part*"))
