"""Windowed `spectral_index` versus plain in-memory numpy on a Sentinel-2-tile-sized scene.

Generates a 10980 x 10980 four-band uint16 tiled GeoTIFF (blue, green, red, nir; DN =
reflectance x 10000, nodata 0 on a swath edge and in speckles), written strip by strip
so generation itself stays memory-flat, then times NDVI plus statistics by each method
in its own subprocess so that each peak RSS (ru_maxrss of the child) is its own:

  windowed        tools.spectral.spectral_index from disk, statistics only
  windowed+cog    the same, also streaming the NDVI raster to a COG
  in_memory       rasterio reads red and nir whole, numpy NDVI with NaN-masked nodata,
                  then the same statistics (exact percentiles)

    python bench/raster_bench.py                 # full size, writes bench/raster_bench.json
    python bench/raster_bench.py --size 2048     # quick check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# Run as a script (bench/run_all.py does), so the repository root is not on sys.path.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The name makes open_scene take it for a 2019 Sentinel-2 L2A product: scale 1e-4, no
# baseline-04.00 offset, so the windowed path does the real reflectance scaling.
SCENE_NAME = "S2A_MSIL2A_20190601_bench_{size}.tif"
METHODS = ("windowed", "windowed+cog", "in_memory")


# -- the synthetic scene --------------------------------------------------------------


def generate_scene(path: Path, size: int, seed: int = 0) -> Path:
    """A tiled, deflate-compressed 4-band uint16 GeoTIFF with realistic reflectances."""
    import rasterio
    from affine import Affine

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
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    cols = np.arange(size, dtype=np.float32)
    tmp = path.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", **profile) as out:
        for row in range(0, size, 512):
            rows = np.arange(row, min(row + 512, size), dtype=np.float32)[:, None]
            # Smooth fields of vegetation and water fraction, plus sensor noise.
            veg = 0.5 + 0.45 * np.sin(cols / 731.0) * np.cos(rows / 517.0)
            water = np.clip(np.sin((cols + 2 * rows) / 1900.0) - 0.7, 0, None) * 3.3
            shape = (rows.size, size)
            noise = rng.normal(0.0, 0.01, size=(4, *shape)).astype(np.float32)
            soil = 0.18 + 0.04 * np.cos(rows / 97.0 + cols / 151.0)
            blue = 0.06 + 0.03 * soil + noise[0]
            green = 0.08 + 0.04 * veg * (1 - water) + 0.02 * water + noise[1]
            red = (soil * (1 - veg) + 0.04 * veg) * (1 - water) + 0.03 * water + noise[2]
            nir = (soil * 1.3 * (1 - veg) + 0.45 * veg) * (1 - water) + 0.02 * water + noise[3]
            stack = np.stack(np.broadcast_arrays(blue, green, red, nir))
            dn = np.clip(stack * 10000, 1, 10000).astype(np.uint16)
            # Nodata: the slanted edge of an orbit swath, and scattered dropped pixels.
            dn[:, cols[None, :] > size * 0.92 - 0.15 * rows] = 0
            dn[:, rng.random(shape) < 0.001] = 0
            out.write(dn, window=((row, row + rows.size), (0, size)))
        for i, name in enumerate(("blue", "green", "red", "nir"), start=1):
            out.set_band_description(i, name)
    os.replace(tmp, path)
    return path


# -- the methods, each run in a child process -------------------------------------------


def _rss_mb() -> float:
    """This process's peak resident set in MiB. Linux's VmHWM belongs to the address
    space, so it starts afresh at exec; ru_maxrss is inherited across fork+exec from the
    parent's high-water mark and would charge the parent's memory to the child."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_windowed(scene_path: Path, out: Path | None) -> dict[str, Any]:
    from tools.raster import open_scene
    from tools.spectral import spectral_index

    baseline = _rss_mb()
    start = time.perf_counter()
    with open_scene(scene_path) as scene:
        result = spectral_index(scene, "NDVI", out=out)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "baseline_rss_mb": baseline,
        "stats": {
            "mean": result.mean,
            "min": result.min,
            "max": result.max,
            "std": result.std,
            "valid_pixels": result.valid_pixels,
            "p50": result.percentiles["p50"],
        },
    }


def run_in_memory(scene_path: Path) -> dict[str, Any]:
    import rasterio

    baseline = _rss_mb()
    start = time.perf_counter()
    with rasterio.open(scene_path) as ds:
        red = ds.read(3).astype(np.float32)
        nir = ds.read(4).astype(np.float32)
        nodata = ds.nodata
    read_s = time.perf_counter() - start
    red[red == nodata] = np.nan
    nir[nir == nodata] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = (nir - red) / (nir + red)
    valid = np.isfinite(ndvi)
    values = ndvi[valid].astype(np.float64)
    stats = {
        "mean": float(values.mean()),
        "min": float(values.min()),
        "max": float(values.max()),
        "std": float(values.std()),
        "valid_pixels": int(values.size),
        "p50": float(np.percentile(values, 50)),
    }
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "read_seconds": read_s, "baseline_rss_mb": baseline, "stats": stats}


def child(method: str, scene_path: Path, workdir: Path) -> None:
    if method == "in_memory":
        record = run_in_memory(scene_path)
    else:
        out = workdir / "ndvi_windowed.tif" if method == "windowed+cog" else None
        record = run_windowed(scene_path, out)
        if out is not None:
            out.unlink(missing_ok=True)
    record["peak_rss_mb"] = _rss_mb()
    print(json.dumps(record))


def measure(method: str, scene_path: Path, workdir: Path, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            method,
            "--scene",
            str(scene_path),
            "--workdir",
            str(workdir),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the driver -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10980, help="scene width and height in px")
    parser.add_argument("--workdir", type=Path, help="where the scene is generated (kept)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "raster_bench.json")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    parser.add_argument("--repeat", type=int, default=1, help="runs per method; best is kept")
    parser.add_argument(
        "--gdal-cachemax",
        type=int,
        help="GDAL block cache (MB) for the methods;"
        " GDAL's default is 5%% of RAM, all of it counted in peak RSS",
    )
    parser.add_argument("--child", choices=(*METHODS, "generate"), help=argparse.SUPPRESS)
    parser.add_argument("--scene", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child == "generate":
        generate_scene(args.scene, args.size)
        return 0
    if args.child:
        child(args.child, args.scene, args.workdir)
        return 0

    with tempfile.TemporaryDirectory(prefix="raster_bench_") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        scene_path = workdir / SCENE_NAME.format(size=args.size)
        start = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        if args.gdal_cachemax:
            env["GDAL_CACHEMAX"] = str(args.gdal_cachemax)
        if not scene_path.exists():
            # In a child too, so this process stays small for the ones it starts.
            subprocess.run(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--child",
                    "generate",
                    "--scene",
                    str(scene_path),
                    "--size",
                    str(args.size),
                ],
                env=env,
                cwd=REPO,
                check=True,
            )
        generate_s = time.perf_counter() - start
        file_mb = scene_path.stat().st_size / 2**20
        megapixels = args.size * args.size / 1e6
        results: dict[str, Any] = {}
        for method in args.methods.split(","):
            runs = [measure(method, scene_path, workdir, env) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["seconds"])
            best["mpix_per_s"] = megapixels / best["seconds"]
            best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
            results[method] = best
            print(f"  {method}: {best['seconds']:.2f} s", flush=True)

    report = summarise(results, args.size, generate_s, file_mb)
    report["gdal_cachemax_mb"] = args.gdal_cachemax or os.environ.get("GDAL_CACHEMAX", "default")
    print(table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def summarise(
    results: dict[str, Any], size: int, generate_s: float, file_mb: float
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "scene": {
            "width": size,
            "height": size,
            "bands": 4,
            "dtype": "uint16",
            "layout": "512x512 tiles, deflate, pixel-interleaved",
            "file_mb": round(file_mb, 1),
            "generate_seconds": round(generate_s, 2),
        },
        "cpus": os.cpu_count(),
    }
    for method, r in results.items():
        report[method] = {
            "seconds": round(r["seconds"], 3),
            "mpix_per_s": round(r["mpix_per_s"], 2),
            "peak_rss_mb": round(r["peak_rss_mb"], 1),
            "baseline_rss_mb": round(r["baseline_rss_mb"], 1),
            "mean": r["stats"]["mean"],
            "valid_pixels": r["stats"]["valid_pixels"],
        }
        if "read_seconds" in r:
            report[method]["read_seconds"] = round(r["read_seconds"], 3)
    if "windowed" in results and "in_memory" in results:
        w, m = results["windowed"], results["in_memory"]
        report["windowed_over_in_memory_speed"] = round(m["seconds"] / w["seconds"], 3)
        report["stats_agree"] = (
            w["stats"]["valid_pixels"] == m["stats"]["valid_pixels"]
            and math.isclose(w["stats"]["mean"], m["stats"]["mean"], rel_tol=1e-5)
            and math.isclose(w["stats"]["min"], m["stats"]["min"], abs_tol=1e-5)
            and math.isclose(w["stats"]["max"], m["stats"]["max"], abs_tol=1e-5)
        )
    return report


def table(report: dict[str, Any]) -> str:
    lines = [f"{'method':<14}{'seconds':>10}{'Mpx/s':>10}{'peak RSS MB':>14}", "-" * 48]
    for method in METHODS:
        if method in report:
            r = report[method]
            lines.append(
                f"{method:<14}{r['seconds']:>10.2f}{r['mpix_per_s']:>10.1f}"
                f"{r['peak_rss_mb']:>14.0f}"
            )
    if "windowed_over_in_memory_speed" in report:
        lines.append(
            f"windowed / in-memory speed: {report['windowed_over_in_memory_speed']:.2f}x;"
            f" stats agree: {report['stats_agree']}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
