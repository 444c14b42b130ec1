"""Large scenes: `spectral_index`, `water_mask` and `flood_map` on generated Sentinel-2
scenes of three sizes (default 5000, 10000 and 20000 px square), each tool in its own
process so its peak RSS is its own, and a least-squares fit of time against pixel count
to show the growth is linear.

    python bench/scale_bench.py [--sizes 5000,10000,20000] [--workdir DIR] [--out PATH]

Scenes are uncompressed tiled GeoTIFFs (green, red, nir, swir1; uint16 reflectance x
10000) of farmland with a meandering river that widens into a flood on the post date;
generation is strip by strip, so it is memory-flat too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TOOLS = ("spectral_index", "water_mask", "flood_map")
BANDS = ("B3", "B4", "B8", "B11")  # green, red, nir, swir1
# Typical surface reflectances (green, red, nir, swir1) of the cover types.
LAND = np.array([0.08, 0.06, 0.32, 0.20], dtype=np.float32)
WATER = np.array([0.06, 0.04, 0.02, 0.01], dtype=np.float32)


def generate(path: Path, size: int, river_half_width: float, seed: int) -> Path:
    import rasterio
    from affine import Affine

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 4,
        "dtype": "uint16",
        "crs": "EPSG:32630",
        "transform": Affine(10, 0, 600000, 0, -10, 4300020),
        "nodata": 0,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "BIGTIFF": "YES",
    }
    cols = np.arange(size, dtype=np.float32)
    centre = size / 2 + size / 8 * np.sin(cols / (size / 12))
    tmp = path.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", **profile) as out:
        for row in range(0, size, 512):
            rows = np.arange(row, min(row + 512, size), dtype=np.float32)[:, None]
            water = np.abs(rows - centre[None, :]) < river_half_width
            refl = np.where(water[None], WATER[:, None, None], LAND[:, None, None])
            refl = refl * rng.normal(1.0, 0.05, refl.shape).astype(np.float32)
            out.write(
                np.clip(refl * 10000, 1, 10000).astype(np.uint16),
                window=((row, row + rows.size), (0, size)),
            )
        for i, band in enumerate(BANDS, start=1):
            out.set_band_description(i, band)
    tmp.rename(path)
    return path


def child(tool: str, pre: Path, post: Path, out: Path) -> None:
    from bench.raster_bench import _rss_mb
    from tools.raster import open_scene

    started = time.perf_counter()
    if tool == "spectral_index":
        from tools.spectral import spectral_index

        result: Any = spectral_index(open_scene(post), "NDVI", out=out)
        figure = {"mean": result.mean}
    elif tool == "water_mask":
        from tools.water import water_mask

        result = water_mask([open_scene(post)], out)
        figure = {"water_fraction": result.water_fraction}
    else:
        from tools.water import flood_map

        result = flood_map([open_scene(post)], [open_scene(pre)], out)
        figure = {"flooded_area_ha": result.flooded_area_ha}
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_rss_mb": _rss_mb(), **figure}))


def measure(tool: str, pre: Path, post: Path, workdir: Path) -> dict[str, Any]:
    out = workdir / f"{tool}_{post.stem}.tif"
    proc = subprocess.run(
        [sys.executable, __file__, "--child", tool, str(pre), str(post), str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} failed: {proc.stderr.strip().splitlines()[-1:]}")
    out.unlink(missing_ok=True)
    for side in (out.with_suffix(".geojson"), out.with_suffix(".png")):
        side.unlink(missing_ok=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def linear_fit(pixels: list[float], seconds: list[float]) -> dict[str, float]:
    slope, intercept = np.polyfit(pixels, seconds, 1)
    predicted = np.polyval([slope, intercept], pixels)
    ss_res = float(np.sum((np.asarray(seconds) - predicted) ** 2))
    ss_tot = float(np.sum((np.asarray(seconds) - np.mean(seconds)) ** 2)) or 1e-12
    # log-log slope: 1.0 means time grows exactly in proportion to pixels
    exponent = float(np.polyfit(np.log(pixels), np.log(seconds), 1)[0])
    return {
        "seconds_per_mpx": slope * 1e6,
        "intercept_s": intercept,
        "r2": 1 - ss_res / ss_tot,
        "loglog_exponent": exponent,
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], *(Path(p) for p in sys.argv[3:6]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="5000,10000,20000")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    workdir = args.workdir or Path(tempfile.gettempdir()) / "eoagent_scale_bench"
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"sizes": sizes, "runs": {}, "fit": {}}
    for size in sizes:
        started = time.perf_counter()
        pre = generate(workdir / f"S2A_MSIL2A_20190601_pre_{size}.tif", size, size / 200, 1)
        post = generate(workdir / f"S2A_MSIL2A_20190605_post_{size}.tif", size, size / 40, 2)
        print(f"{size}: scenes ready in {time.perf_counter() - started:.0f} s", flush=True)
        for tool in TOOLS:
            run = measure(tool, pre, post, workdir)
            run["mpx_per_s"] = size * size / 1e6 / run["seconds"]
            report["runs"].setdefault(tool, {})[str(size)] = run
            print(
                f"  {tool:15s} {run['seconds']:7.1f} s  {run['mpx_per_s']:6.1f} Mpx/s  "
                f"peak RSS {run['peak_rss_mb']:6.0f} MB",
                flush=True,
            )
    if len(sizes) >= 2:
        for tool in TOOLS:
            runs = report["runs"][tool]
            report["fit"][tool] = linear_fit(
                [s * s for s in sizes], [runs[str(s)]["seconds"] for s in sizes]
            )
            report["fit"][tool]["max_peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs.values())
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["fit"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
