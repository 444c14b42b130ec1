"""An offline caption of a scene from what was measured in it (`describe_scene`).

No learned model: sensor, date, place (centre of the bounds in lat/lon), pixel size, and
the content measured by the offline tools: land-cover shares on multispectral scenes,
low-backscatter (likely water) share on SAR, green cover on visible-only images. The
same scene always gets the same words, so captions can be embedded and searched.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from tools.errors import EOError
from tools.export import preview_grid
from tools.raster import Scene

# Excess green on chromatic coordinates, ExG = 2g - r - b (Woebbecke et al. 1995); > 0.05
# separates green plants from soil and built surfaces in RGB photos (Meyer & Neto 2008
# use ExG - ExR > 0). Dry or dark vegetation and green water are missed or confused.
EXG_GREEN = 0.05
CAPTION_GRID = 1024  # pixels a side: content of larger scenes is measured on a preview


class CaptionResult(BaseModel):
    """A caption and the measured facts it was built from."""

    caption: str
    sensor: str
    sensor_title: str
    date: str | None
    centre_lat: float | None
    centre_lon: float | None
    bounds_epsg4326: list[float] | None
    resolution_m: float | None = Field(description="pixel size in metres (approximate)")
    land_cover: dict[str, float] = Field(
        default_factory=dict, description="land-cover class shares (multispectral scenes)"
    )
    water_share: float | None = None
    cloud_share: float | None = None
    green_share: float | None = Field(
        default=None, description="ExG green cover share (visible-only images)"
    )
    highlights: list[str] = Field(
        default_factory=list, description="the notable features, in words (no numbers)"
    )
    method: str = "measured content (offline)"
    vlm_caption: str | None = Field(
        default=None, description="what the vision-language model sees, when one is configured"
    )
    notes: list[str] = Field(default_factory=list)


def _place(lat: float, lon: float) -> str:
    ns = "N" if lat >= 0 else "S"
    ew = "E" if lon >= 0 else "W"
    return f"{abs(lat):.2f}°{ns}, {abs(lon):.2f}°{ew}"


def _resolution_m(scene: Scene) -> float | None:
    grid = scene.grid
    from rasterio.windows import Window

    centre = Window(grid.width // 2, grid.height // 2, 1, 1)
    area = grid.pixel_area_m2(centre)
    return None if area is None else math.sqrt(float(np.mean(area)))


def _percent(share: float) -> str:
    return f"{round(100 * share)}%"


def _land_phrases(shares: dict[str, float]) -> tuple[str, list[str]]:
    vegetation = shares.get("dense vegetation", 0.0) + shares.get("sparse vegetation", 0.0)
    ranked = sorted(
        ((name, share) for name, share in shares.items() if share >= 0.02),
        key=lambda item: (-item[1], item[0]),
    )[:4]
    cover = ", ".join(f"{name} {_percent(share)}" for name, share in ranked)
    water, built, bare = (
        shares.get("water", 0.0),
        shares.get("built-up", 0.0),
        shares.get("bare soil", 0.0),
    )
    features: list[str] = []
    if water >= 0.15 and vegetation + bare >= 0.3:
        features.append(
            "extensive surface water spread among fields and farmland, as in a flood or a wetland"
        )
    elif water >= 0.5:
        features.append("mostly open water (sea, lake or reservoir)")
    elif water >= 0.02:
        features.append("some surface water (rivers, lakes or ponds)")
    if bare >= 0.6:
        features.append(
            "mostly bare ground with little vegetation: arid or semi-arid land, desert or steppe"
        )
    if built >= 0.2:
        features.append("a large built-up area: a town or city with roads")
    elif built >= 0.05:
        features.append("villages, roads or scattered buildings")
    if shares.get("dense vegetation", 0.0) >= 0.5:
        features.append("dense vegetation such as forest or irrigated crops")
    elif vegetation >= 0.3 and built < 0.2:
        features.append("cultivated fields or grassland")
    if shares.get("burned", 0.0) >= 0.05:
        features.append("dark burn-scar-like areas (possible recent fire)")
    if shares.get("snow", 0.0) >= 0.1:
        features.append("snow or ice cover")
    if shares.get("cloud", 0.0) >= 0.2:
        features.append(f"partly cloudy ({_percent(shares['cloud'])} cloud)")
    return cover, features


def _visible_shares(scene: Scene) -> tuple[float, float] | None:
    """(green cover, blue-dominant share) of an RGB image on a preview grid."""
    view = scene.regridded(preview_grid(scene.grid, CAPTION_GRID))
    if view.grid.crs is None and not view.grid.same_as(scene.grid):
        view = scene
    d = view.read(["red", "green", "blue"])
    total = d["red"] + d["green"] + d["blue"]
    valid = np.isfinite(total) & (total > 0)
    if not valid.any():
        return None
    r, g, b = (d[k][valid] for k in ("red", "green", "blue"))
    exg = (2 * g - r - b) / (r + g + b)
    # green plants reflect more green than blue; turquoise shallow water does not
    green = (exg > EXG_GREEN) & (g > b)
    blue = (b > g) & (b > r)
    return float(np.mean(green)), float(np.mean(blue))


def _sar_water(scene: Scene) -> float | None:
    from tools.water import water_mask

    try:
        return float(water_mask([scene], method="sar").water_fraction)
    except EOError:
        return None


def describe_scene(scene: Scene, land_cover: Any | None = None) -> CaptionResult:
    """A one- or two-sentence caption of a scene from measured content, with the facts.

    `land_cover` may pass a LandCoverResult already computed for this scene.
    """
    summary = scene.summary()
    raw_bounds: Any = summary.get("bounds_epsg4326")
    bounds = [float(v) for v in raw_bounds] if raw_bounds else None
    lat = lon = None
    if bounds:
        west, south, east, north = bounds
        lat, lon = round((south + north) / 2, 4), round((west + east) / 2, 4)
    res = _resolution_m(scene)
    title = str(summary["sensor_title"])
    date = summary.get("date")
    where = (
        f"centred near {_place(lat, lon)}"
        if lat is not None and lon is not None
        else ("without georeference")
    )
    when = f"acquired {date}" if date else "date unknown"
    size = f"{scene.grid.width}x{scene.grid.height} px"
    pixel = f" at {res:.3g} m" if res is not None else ""
    first = f"{title} image {where}, {when} ({size}{pixel})."
    result = CaptionResult(
        caption="",
        sensor=str(summary["sensor"]),
        sensor_title=title,
        date=date,  # type: ignore[arg-type]
        centre_lat=lat,
        centre_lon=lon,
        bounds_epsg4326=bounds,
        resolution_m=round(res, 3) if res is not None else None,
    )
    if scene.has("green", "red", "nir", "swir1"):
        if land_cover is None:
            from tools.landcover import land_cover as classify

            land_cover = classify(scene)
        shares = {k: round(v, 4) for k, v in land_cover.shares.items()}
        cover, features = _land_phrases(shares)
        result.land_cover = shares
        result.water_share = shares.get("water")
        result.cloud_share = shares.get("cloud")
        second = f"Land cover: {cover}."
        if features:
            second += " " + "; ".join(features).capitalize() + "."
        result.notes = [n for n in land_cover.notes if "DN" in n]
        result.highlights = features
    elif scene.has("VV") or scene.has("VH"):
        water = _sar_water(scene)
        result.water_share = round(water, 4) if water is not None else None
        second = "Radar backscatter; no optical land-cover classes."
        if water is not None:
            second = (
                f"Radar backscatter: {_percent(water)} dark, smooth surface (likely open "
                "water); no optical land-cover classes."
            )
            if water >= 0.15:
                second += " Extensive water, as in a flood or along a coast or lake."
                result.highlights = ["radar view of extensive water, as in a flood"]
    elif scene.has("red", "green", "blue"):
        visible = _visible_shares(scene)
        second = "Visible bands only, so no land-cover classes"
        if visible is not None:
            green, blue = visible
            result.green_share = round(green, 4)
            second += f"; green vegetation covers about {_percent(green)} (excess-green index)"
            if blue >= 0.2:
                second += f", and {_percent(blue)} is blue-dominated (likely water)"
                result.highlights.append("blue water")
            if green >= 0.4:
                result.highlights.append("green vegetation")
        second += "."
        fine = res is not None and res < 2.0
        if fine:
            second += " Very high resolution aerial view where buildings and streets are visible."
            result.highlights.append("very high resolution aerial photo")
    else:
        second = f"Bands: {', '.join(scene.band_names)}."
    result.caption = f"{first} {second}"
    return result


# File-name words with a fixed meaning in Earth-observation data sets (xView2, LEVIR).
NAME_WORDS = {"pre": "pre (before the event)", "post": "post (after the event)"}


def source_phrase(path: str | Path) -> str:
    """Words from a scene's file and folder names ('joplin tornado 2011, post (after the
    event) aerial tile'), which archives index beside the caption: they often name the
    place or the event. Pure numbers (tile indices) are dropped."""
    path = Path(path)
    parts = [p for p in (path.parent.name, path.stem) if p]
    words = []
    for part in parts:
        tokens = part.replace("-", " ").replace("_", " ").split()
        kept = [NAME_WORDS.get(t.lower(), t) for t in tokens if not t.isdigit() or _year(t)]
        if kept:
            words.append(" ".join(kept))
    return ", ".join(words)


def _year(token: str) -> bool:
    return len(token) == 4 and token[:2] in ("19", "20")


VLM_PROMPT = (
    "Describe this satellite or aerial image in one or two sentences for an analyst: "
    "land cover, water, settlements, and any damage, flooding or burn scars you can see."
)


def describe_with_vlm(
    scene: Scene, brain: Any, measured: CaptionResult | None = None
) -> CaptionResult:
    """The offline caption plus what a vision-language brain (the `hf` backend) says of the
    scene's true-colour view. The measured facts stay: the model adds what it sees, and a
    failure of the model keeps the measured caption with a note."""
    import base64
    import io

    from langchain_core.messages import HumanMessage
    from PIL import Image

    from tools.export import preview_grid, scene_rgb

    measured = measured or describe_scene(scene)
    rgb = scene_rgb(scene, preview_grid(scene.grid, 672))
    buffer = io.BytesIO()
    Image.fromarray((rgb * 255).astype("uint8")).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    message = HumanMessage(
        content=[
            {"type": "text", "text": VLM_PROMPT},
            {"type": "image_url", "image_url": {"url": url}},
        ]
    )
    try:
        text = brain.respond([message], []).text.strip()
    except Exception as exc:  # the measured caption still answers
        note = f"The vision-language model could not describe the scene ({type(exc).__name__})."
        return measured.model_copy(update={"notes": [*measured.notes, note]})
    return measured.model_copy(
        update={"vlm_caption": text or None, "method": "measured content + vision-language model"}
    )
