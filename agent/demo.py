"""`eoagent demo` (and `make run` until the chat exists): a terminal tour of the tools
on the bundled, generated flood-and-fire example, with the known truth beside each
answer so a user can see the numbers are right."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.demo_data import DemoScenes, make_demo_scenes
from tools.raster import open_scene


def _ha(scenes: DemoScenes, cover: str, when: str = "post") -> float:
    grid = open_scene(scenes.post).grid
    area = grid.area_m2(scenes.truth_mask(cover, when))
    return (area or 0.0) / 1e4


def _step(title: str, fn: Callable[[], Any], show: Callable[[Any], str]) -> Any:
    started = time.perf_counter()
    result = fn()
    print(f"\n▶ {title}  ({time.perf_counter() - started:.2f} s)")
    print("  " + show(result).replace("\n", "\n  "))
    return result


def run_demo(workdir: Path) -> None:
    from tools.change import burn_severity, vegetation_change
    from tools.spectral import spectral_index
    from tools.water import flood_map, water_mask

    workdir.mkdir(parents=True, exist_ok=True)
    scenes = make_demo_scenes(workdir / "scenes")
    out = workdir / "results"
    pre, post, sar = open_scene(scenes.pre), open_scene(scenes.post), open_scene(scenes.post_sar)
    print("eoagent demo: a generated Sentinel-2 L2A pair (1 Aug and 4 Sep 2023, UTM 30N, 10 m)")
    print(f"of a river valley that floods while a fire burns the hills; scenes in {scenes.folder}")

    _step(
        "scene_info post",
        lambda: post.summary(),
        lambda r: (
            f"{r['sensor_title']}, {r['date']}, {r['width']}x{r['height']} px, {r['crs']}, "
            f"bands: {', '.join(r['bands'])}\nnotes: {'; '.join(r['notes'])}"
        ),
    )
    _step(
        "spectral_index NDVI on pre",
        lambda: spectral_index(pre, "NDVI", out=out / "pre_ndvi.tif"),
        lambda r: (
            f"mean {r.mean:.3f}, min {r.min:.3f}, max {r.max:.3f}, "
            f"{r.valid_pixels} valid pixels -> {r.output}"
        ),
    )
    truth_water = _ha(scenes, "water") + _ha(scenes, "flood")
    _step(
        "water_mask on post (Sentinel-2 + Sentinel-1 fused)",
        lambda: water_mask([post, sar], out=out / "post_water.tif"),
        lambda r: (
            f"water {r.water_fraction:.1%} of the scene, {r.water_area_ha:.1f} ha "
            f"(truth {truth_water:.1f} ha), method {r.method} -> {r.output}"
        ),
    )
    truth_flood = _ha(scenes, "flood")
    _step(
        "flood_map pre -> post",
        lambda: flood_map([post, sar], [pre], out=out / "flood.tif"),
        lambda r: (
            f"newly flooded {r.flooded_area_ha:.1f} ha (truth {truth_flood:.1f} ha), "
            f"permanent water {r.permanent_water_ha:.1f} ha "
            f"(truth {_ha(scenes, 'water', 'pre'):.1f} ha) -> {r.output}"
        ),
    )
    truth_burn = _ha(scenes, "burned")
    _step(
        "burn_severity pre -> post",
        lambda: burn_severity(pre, post, out=out / "burn.tif"),
        lambda r: f"burned {r.burned_area_ha:.1f} ha (truth {truth_burn:.1f} ha) -> {r.output}",
    )
    crop_lost = scenes.truth_mask("crop", "pre") & ~scenes.truth_mask("crop", "post")
    truth_loss = (post.grid.area_m2(crop_lost) or 0.0) / 1e4
    _step(
        "vegetation_change pre -> post",
        lambda: vegetation_change(pre, post, out=out / "vegetation.tif"),
        lambda r: (
            f"vegetation loss {r.loss_area_ha:.1f} ha (truth {truth_loss:.1f} ha), "
            f"gain {r.gain_area_ha:.1f} ha -> {r.output}"
        ),
    )
    print(f"\nAll results (GeoTIFF, GeoJSON, PNG quicklooks) are in {out}.")
    print("Try: eoagent index NDWI " + str(scenes.post) + " --json")
