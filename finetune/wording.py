"""Argument values drawn from a tool's schema, and the words a user asks for them with.

`draw_arguments` picks values the tool's Args model accepts and the local brain's
constrained decoder can write (enums, booleans, session handles, spyndex index names,
dates, numbers inside the field's bounds). `word_request` words a request for them with
a phrasing family's template (`finetune.phrasing`) and one of the tool's intent phrases
(`finetune.intents`), held-out ones for the test split. `finetune.data` builds the
conversations around them.
"""

from __future__ import annotations

import json
import random
import re
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from finetune.phrasing import INTENTS, Family, intent_split, intents_from_description, misspell

if TYPE_CHECKING:
    from tools.registry import ToolSpec

Split = Literal["train", "validation", "test"]

SCENE_PAIRS = (
    ("pre", "post"),
    ("pre", "post"),
    ("pre", "post"),
    ("before", "after"),
    ("t0", "t1"),
    ("june", "august"),
    ("s2_2019", "s2_2020"),
    ("img_a", "img_b"),
    ("pre_fire", "post_fire"),
    ("pre_flood", "post_flood"),
    ("jan", "feb"),
    ("old", "new"),
)
# Sessions with one scene (no pair tools then); bench/data/disaster_tasks.jsonl's "img"
# and "scene" are left out so that bench stays unseen.
SINGLE_SCENES = (
    "image",
    "s2",
    "tile_07",
    "aoi",
    "sentinel2",
    "ortho",
    "may_2021",
    "site",
    "l8_scene",
    "im1",
    "photo",
    "area_1",
)
SINGLE_SHARE = 0.25
VECTORS = ("bldg", "footprints", "buildings", "osm_bldg")
COMMON_INDICES = (
    "NDVI",
    "NDWI",
    "MNDWI",
    "NBR",
    "EVI",
    "SAVI",
    "NDBI",
    "NDMI",
    "GNDVI",
    "BAI",
    "NDSI",
    "AWEInsh",
    "ARVI",
    "MSAVI",
    "NBR2",
    "OSAVI",
)
SENSORS = (
    "Sentinel-2",
    "Landsat 8",
    "Sentinel-1",
    "sentinel2_l2a",
    "Landsat 9",
    "landsat8",
    "Sentinel-2 L1C",
    "sentinel1",
)
SEARCH_TEXTS = (
    "flooded farmland",
    "burned forest",
    "river delta",
    "harbour with ships",
    "snow on mountains",
    "dense city blocks",
    "landslide scar",
    "coastal erosion",
)
VALUE_WORDS = {
    "geotiff": ("GeoTIFF", "geotiff", "a tif", "a COG"),
    "geojson": ("GeoJSON", "geojson", "vector polygons"),
    "png": ("PNG", "a png quicklook", "an image"),
    "cva": ("change vector analysis", "CVA", "cva"),
    "structural": ("the structural method", "structural"),
    "fusion": ("fused", "both fused", "fusion"),
    "sar": ("the SAR only", "radar backscatter", "sar"),
    "optical": ("optical bands only", "the optical method", "optical"),
}
FIELD_WORDS = {
    "method": ("using {w}", "with {w}", "method {v}"),
    "format": ("as {w}", "to {w}", "in {w} format"),
    "align": ("and align the grids", "(resample pre onto post first)", "align=true"),
    "threshold": ("with threshold {v}", "using a {v} cutoff", "threshold={v}"),
    "k": ("top {v}", "{v} results", "k={v}"),
    "max_cloud": ("cloud below {v}", "max cloud {v}"),
    "date_from": ("from {v}", "since {v}", "after {v}"),
    "date_to": ("until {v}", "up to {v}", "before {v}"),
    "sensor": ("{v} only", "sensor {v}"),
    "filename": ("named {v}", "file name {v}"),
    "text": ("showing {v}", "of {v}", "matching '{v}'"),
    "like": ("similar to {v}", "like {v}"),
    "region": ("inside {v}", "within {v}", "over the region {v}"),
    "classes": ("looking for {v}", "classes {v}", "({v})"),
    "labels": ("with labels {v}", "among {v}"),
    "expression": ("for {v}", "target: {v}"),
}
OBJECTS = (
    "ship",
    "storage tank",
    "building",
    "car",
    "airplane",
    "swimming pool",
    "boat",
    "tent",
    "truck",
    "bridge",
)
EXPRESSIONS = (
    "the golf course in the north",
    "the largest ship near the pier",
    "the white building by the river",
    "the bridge over the canal",
    "the stadium",
    "the airport runway",
    "the flooded field west of the road",
)
PRE_POST_WORDS = (
    "{a} and {b}",
    "{a} and {b}",
    "{a} vs {b}",
    "{a} / {b}",
    "the {a} and {b} images",
    "pre-event {a} and post-event {b}",
    "{a} -> {b}",
)

# Handles left unsaid: "the two images" for the session's pair, "the latest image"
# for its second scene (training split only, in this share of requests).
DEICTIC_SHARE = 0.2
DEICTIC_PAIR = (
    "the two images",
    "the two dates",
    "before and after",
    "the image pair",
    "the pre/post pair",
    "these scenes",
)
DEICTIC_SCENE = (
    ("the earlier image", "the before image", "the first scene", "the pre-event image"),
    ("the latest image", "the after image", "the new scene", "the post-event image", "this scene"),
)
DEICTIC_SINGLE = ("this image", "the image", "the scene", "this picture", "the loaded scene")
# Follow-ups that repeat the last call with one value changed: "and NBR?" (train | test)
ELLIPSES = {
    "train": (
        "and {v}?",
        "now {v}",
        "what about {v}?",
        "same for {v}",
        "{v} too, please",
        "and for {v}?",
        "also {v}",
        "repeat with {v}",
        "ok, now {v}",
        "how about {v}",
        "same thing with {v}",
        "then {v}",
        "{v}?",
        "again, {v} this time",
    ),
    "test": ("do {v} next", "{v} as well?", "could you redo it with {v}?"),
}
ELLIPSIS_FIELDS = ("index", "scene", "scenes", "method", "expression", "topic")
# "measure flood_1 in" + "within post" -> "measure flood_1 in post"
DOUBLED_PREPOSITION = re.compile(
    r"\b(in|inside|within|over|to|into|on)\s+(?:inside|within|over the region|in)\b"
)


# -- argument values ----------------------------------------------------------------


@dataclass
class Session:
    scenes: dict[str, str]
    pair: tuple[str, str]  # (scene, scene) in a one-scene session
    results: dict[str, str] = field(default_factory=dict)

    @property
    def scene_handles(self) -> list[str]:
        return list(self.scenes)

    @property
    def single(self) -> bool:
        return self.pair[0] == self.pair[1]


def new_session(rng: random.Random) -> Session:
    if rng.random() < SINGLE_SHARE:
        pre = post = rng.choice(SINGLE_SCENES)
    else:
        pre, post = rng.choice(SCENE_PAIRS)
    scenes = {pre: "scene", post: "scene"}
    if rng.random() < 0.3:
        scenes[f"{post}_sar"] = "scene"
    if rng.random() < 0.3:
        scenes[rng.choice(VECTORS)] = "vector"
    return Session(scenes, (pre, post))


def _bounds(prop: dict[str, Any]) -> tuple[float, float, bool]:
    options = [p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]
    main = options[0] if options else prop
    low = main.get("minimum", main.get("exclusiveMinimum", 0))
    high = main.get("maximum", main.get("exclusiveMaximum", low + 100))
    return float(low), float(high), main.get("type") == "integer"


def _free_string(name: str, prop: dict[str, Any], session: Session, rng: random.Random) -> str:
    text = prop.get("description", "").lower()
    if "spyndex" in text or "index short name" in text:
        return _index_name(rng)
    if name in ("classes", "labels"):
        return rng.choice(OBJECTS)
    if name == "expression":
        return rng.choice(EXPRESSIONS)
    if name == "topic":
        return _index_name(rng) if rng.random() < 0.6 else rng.choice(SENSORS)
    if "yyyy-mm-dd" in text:
        return f"20{rng.randint(15, 24)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if "file name" in text:
        return f"{rng.choice(('map', 'result', 'flood', 'out'))}_{rng.randint(1, 9)}"
    if "handle" in text:
        return rng.choice(list(session.results) or session.scene_handles)
    listed = re.findall(r"[a-z0-9][a-z0-9\-]+", text.split(".")[0])
    if name == "sensor" and listed:
        return rng.choice([w for w in listed if w != "or"])
    return rng.choice(SEARCH_TEXTS)


def _index_name(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return rng.choice(COMMON_INDICES)
    import spyndex

    return rng.choice(sorted(spyndex.indices))


def draw_arguments(
    spec: ToolSpec, session: Session, rng: random.Random, *, optional_share: float = 0.25
) -> dict[str, Any] | None:
    """Arguments the Args model accepts (its validators may tie fields together, as
    zonal_stats' region-or-bbox does): a few draws, more optional fields each time."""
    from pydantic import ValidationError

    for attempt in range(8):
        share = min(1.0, optional_share + attempt * 0.15)
        args = _draw_once(spec, session, rng, share)
        if args is None:
            return None
        if not args and attempt < 7:  # a request names something: prefer non-empty
            continue
        try:
            spec.args_model.model_validate(args)
        except ValidationError:
            continue
        return args
    return None


def _draw_once(
    spec: ToolSpec, session: Session, rng: random.Random, optional_share: float
) -> dict[str, Any] | None:
    """Values for the tool's arguments that the constrained decoder can write: all
    required ones, each optional one with `optional_share`. None when the session
    cannot serve the tool (e.g. no footprints loaded)."""
    from agent.brains.constrained import call_arguments

    schema = spec.parameters_schema()
    props = schema.get("properties", {})
    results = list(session.results)
    offered = call_arguments(spec, session.scene_handles, results)
    if session.single and "pre" in schema.get("required", ()):
        return None  # a before/after tool needs two scenes
    chosen: dict[str, Any] = {}
    for arg in offered:
        prop = props[arg.name]
        if session.single and arg.name == "pre":
            continue
        if not arg.required and (rng.random() >= optional_share or not _drawable(arg, prop)):
            continue
        if arg.choices is not None:
            values = [json.loads(c) for c in arg.choices]
            values = _sensible(arg.name, prop, values, session, spec)
            if not values:
                if arg.required:
                    return None
                continue
            value = rng.choice(values)
            if not arg.required and value == prop.get("default"):
                continue
            chosen[arg.name] = value
        elif arg.kind == "number":
            low, high, integer = _bounds(prop)
            value = (
                rng.randint(int(low) or 1, int(high))
                if integer
                else round(rng.uniform(max(low, 0.05), min(high, 1.0)), 2)
            )
            chosen[arg.name] = value
        elif arg.kind == "string_list":
            chosen[arg.name] = [_free_string(arg.name, prop, session, rng)]
        else:
            chosen[arg.name] = _free_string(arg.name, prop, session, rng)
    if "pre" not in chosen:
        # flood_map's align would only move a SAR twin onto post's grid; requests
        # without a pre scene leave it at its default
        chosen.pop("align", None)
    if chosen.get("region") is not None and chosen.get("region") == chosen.get("result"):
        others = (
            [h for h in session.scenes if session.scenes[h] == "vector"]
            or [h for h in session.results if h != chosen["result"]]
            or [session.pair[1]]
        )
        chosen["region"] = rng.choice(others)
    return chosen


def _drawable(arg: Any, prop: dict[str, Any]) -> bool:
    """Optional free-text fields are drawn only where we know what a user would say;
    otherwise their defaults apply (e.g. zonal_stats' bbox_crs without a bbox)."""
    return arg.choices is not None or arg.name in FIELD_WORDS


def _sensible(
    name: str, prop: dict[str, Any], values: list[Any], session: Session, spec: ToolSpec
) -> list[Any]:
    """Handle choices a user would mean: the pre scene for 'pre', the post one (and its
    SAR twin) for 'post', footprints for a footprint field, any scene otherwise."""
    pre, post = session.pair
    vectors = [h for h, k in session.scenes.items() if k == "vector"]
    scenes = [h for h, k in session.scenes.items() if k == "scene"]
    text = prop.get("description", "").lower()
    is_list = values and isinstance(values[0], list)
    flat = [v[0] for v in values if len(v) == 1] if is_list else values
    if not text.startswith("handle") or not flat:
        return values
    if set(flat) & set(session.results) or "footprint" in text:
        pool = list(session.results) if set(flat) & set(session.results) else vectors
        return [[v] if is_list else v for v in pool]
    if name == "pre":
        pick = [pre]
    elif name == "post":
        pick = [post]
    else:
        pick = [rng_free for rng_free in scenes if not rng_free.endswith("_sar")] or scenes
    out: list[Any] = [[v] if is_list else v for v in pick]
    sar = f"{post}_sar"
    if is_list and sar in session.scenes and name in ("post", "scenes"):
        out.append([post, sar])
        out.append([sar])
    return out


# -- requests -------------------------------------------------------------------------


def _words(value: Any, rng: random.Random) -> str:
    return rng.choice(VALUE_WORDS.get(str(value), (str(value),)))


def word_request(
    spec: ToolSpec,
    args: dict[str, Any],
    family: Family,
    split: Split,
    rng: random.Random,
    *,
    refer_to_it: bool = False,
    pair: tuple[str, str] | None = None,
) -> str:
    """The user's request for `spec(**args)` in one of `family`'s templates. With the
    session's scene `pair`, training requests sometimes say "the two images" or "the
    latest image" instead of the handles, as people do when the scenes are obvious."""
    intents = INTENTS.get(spec.name) or intents_from_description(spec.name, spec.description)
    template = rng.choice(family.templates)
    form = "ask" if "{ask}" in template else "do"
    intent = rng.choice(intent_split(spec.name, intents[form], form, split))
    slots = {n for _, n, _, _ in string.Formatter().parse(intent) if n}
    values = {k: (", ".join(v) if isinstance(v, list) else str(v)) for k, v in args.items()}
    if refer_to_it and "result" in args:
        values["result"] = rng.choice(("it", "that", "this result", "the last result"))
    intent = intent.format(**{k: values.get(k, "") for k in slots})
    handles = [k for k in args if isinstance(args[k], str | list) and k not in slots]
    handle_fields = [
        k for k in handles if k in ("pre", "post", "scene", "scenes", "result", "footprints")
    ]
    # only the training split draws here, so the test split's requests stay fixed
    deictic = split == "train" and pair is not None and rng.random() < DEICTIC_SHARE
    pieces: list[str] = []
    if {"pre", "post"} <= set(handle_fields):
        pieces.append(
            rng.choice(DEICTIC_PAIR)
            if deictic and _as_list(args["pre"]) + _as_list(args["post"]) == list(pair or ())
            else rng.choice(PRE_POST_WORDS).format(a=values["pre"], b=values["post"])
        )
        handle_fields = [k for k in handle_fields if k not in ("pre", "post")]
    for key in handle_fields:
        value = args[key]
        shown = values[key]
        single = value[0] if isinstance(value, list) and len(value) == 1 else value
        if deictic and pair is not None and single in pair and key in ("scene", "scenes"):
            one = pair[0] == pair[1]
            pieces.append(rng.choice(DEICTIC_SINGLE if one else DEICTIC_SCENE[pair.index(single)]))
            continue
        if isinstance(value, list) and len(value) == 2:
            shown = f"{value[0]} and {value[1]}"
        if key == "footprints":
            pieces.append(
                rng.choice(("with footprints {v}", "using {v}", "({v} footprints)")).format(v=shown)
            )
        else:
            pieces.append(shown)
    for key in args:
        if key in slots or key in handle_fields or key in ("pre", "post"):
            continue
        patterns = FIELD_WORDS.get(key, ("{k} {v}", "with {k} {v}", "{k}={v}"))
        pieces.append(rng.choice(patterns).format(k=key, v=values[key], w=_words(args[key], rng)))
    on = " ".join(pieces)
    text = template.format(do=intent, ask=intent, on=on)
    text = _tidy(DOUBLED_PREPOSITION.sub(r"\1", text))
    if family.typos:
        text = misspell(text, family.typos, rng)
    return text


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([?.,!])", r"\1", text)
    text = re.sub(r"^(?:[:>\-]+\s*)", "", text)
    text = re.sub(r"([?.!,])[?.,]+", r"\1", text)
    return text[0].upper() + text[1:] if text and text[0].islower() and text[:2] != "pl" else text


def vary_one(
    spec: ToolSpec, args: dict[str, Any], session: Session, rng: random.Random
) -> tuple[dict[str, Any], str] | None:
    """The last call again with one value changed (another index, scene or method),
    and the words for the new value; None when the tool has nothing to vary."""
    for _ in range(6):
        other = draw_arguments(spec, session, rng)
        if other is None:
            return None
        changed = [k for k in ELLIPSIS_FIELDS if k in other and other[k] != args.get(k)]
        if not changed:
            continue
        key = rng.choice(changed)
        varied = {**args, key: other[key]}
        try:
            spec.args_model.model_validate(varied)
        except ValueError:
            continue
        value = other[key]
        shown = " and ".join(value) if isinstance(value, list) else str(value)
        return varied, _words(shown, rng) if key == "method" else shown
    return None


def word_ellipsis(value_words: str, family: Family, split: Split, rng: random.Random) -> str:
    """A terse follow-up asking for the same thing with `value_words` ("and NBR?")."""
    side = "test" if split == "test" else "train"  # validation reuses training follow-ups
    text = rng.choice(ELLIPSES[side]).format(v=value_words)
    if family.typos:
        text = misspell(text, family.typos, rng)
    return text
