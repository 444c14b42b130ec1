"""Accuracy and figures of the offline tools on the real samples in ../shared/data:
Spain water (S2, S1, fusion), change F1 on every LEVIR-CD and DSIFN-CD pair (plain CVA
and the default method), Joplin damage counts, and the generated demo against its truth.

    python bench/accuracy_bench.py [--data ../shared/data] [--out bench/accuracy_bench.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.change import change_detection  # noqa: E402
from tools.change_vector import f1_score  # noqa: E402
from tools.damage import building_damage  # noqa: E402
from tools.demo_data import make_demo_scenes  # noqa: E402
from tools.raster import open_scene  # noqa: E402
from tools.water import flood_map, water_mask  # noqa: E402


def spain_water(data: Path, work: Path) -> dict[str, Any]:
    s2 = open_scene(data / "sentinel2/spain_flood_2019_s2_l1c.tif")
    s1 = open_scene(data / "sar/spain_flood_2019_s1.tif")
    out: dict[str, Any] = {}
    for name, scenes in (("s2", [s2]), ("s1", [s1]), ("fusion", [s2, s1])):
        started = time.perf_counter()
        result = water_mask(scenes, work / f"water_{name}.tif")
        out[name] = {
            "water_fraction": round(result.water_fraction, 4),
            "water_area_ha": round(result.water_area_ha or 0.0, 1),
            "method": result.method,
            "seconds": round(time.perf_counter() - started, 2),
        }
    return out


def change_f1(data: Path, work: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for dataset in ("levir_cd", "dsifn_cd"):
        folder = data / "change" / dataset
        per_pair: dict[str, dict[str, float]] = {}
        for a in sorted((folder / "A").glob("*.png")):
            label = np.asarray(Image.open(folder / "label" / a.name).convert("L")) > 127
            per_pair[a.stem] = {}
            for method in ("cva", "structural"):
                out = work / f"{dataset}_{a.stem}_{method}.tif"
                change_detection(
                    open_scene(a), open_scene(folder / "B" / a.name), out, method=method
                )
                with rasterio.open(out) as ds:
                    predicted = ds.read(1) == 2
                per_pair[a.stem][method] = round(f1_score(predicted, label), 3)
        means = {
            m: round(float(np.mean([p[m] for p in per_pair.values()])), 3)
            for m in ("cva", "structural")
        }
        results[dataset] = {"pairs": per_pair, "mean": means}
    return results


def joplin_damage(data: Path, work: Path) -> dict[str, Any]:
    folder = data / "disaster/joplin_tornado_2011"
    started = time.perf_counter()
    result = building_damage(
        open_scene(folder / "pre_aerial_aligned_to_post_31500-5137.tif"),
        open_scene(folder / "post_aerial_tile_31500-5137.tif"),
        folder / "building_footprints_joplin.geojson",
        work / "joplin_damage.geojson",
    )
    return {
        "buildings_in_scene": result.buildings_in_scene,
        "buildings_scored": result.buildings_scored,
        "counts": result.counts,
        "area_ha": result.area_ha,
        "mean_score": result.mean_score,
        "seconds": round(time.perf_counter() - started, 2),
    }


def demo_truth(work: Path) -> dict[str, Any]:
    scenes = make_demo_scenes(work / "demo")
    pre, post, sar = (open_scene(p) for p in (scenes.pre, scenes.post, scenes.post_sar))
    flood = flood_map([post, sar], [pre])
    truth = (post.grid.area_m2(scenes.truth_mask("flood")) or 0.0) / 1e4
    return {"flooded_area_ha": round(flood.flooded_area_ha or 0.0, 2), "truth_ha": round(truth, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    default_data = Path(__file__).resolve().parents[2] / "shared" / "data"
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        figures["demo_flood"] = demo_truth(work)
        if args.data.exists():
            figures["spain_water"] = spain_water(args.data, work)
            figures["change_f1"] = change_f1(args.data, work)
            figures["joplin_damage"] = joplin_damage(args.data, work)
        else:
            figures["note"] = f"sample data not found at {args.data}; real-data figures skipped"
    args.out.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
