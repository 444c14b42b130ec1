"""Training and test conversations built from the tool registry itself.

For every tool in `REGISTRY` the builder draws argument values from the tool's Args
model (enums and Literals, booleans, session handles, spyndex index names, dates,
numbers inside the field's bounds), words a request for them with a phrasing family
(`finetune.phrasing`), and writes the conversation the agent would have: the user
asks, the assistant calls the tool in the canonical call format, the tool's result
comes back, and the assistant answers with its numbers. Some conversations go on
with a follow-up that names an earlier result by its handle (or by "it"); others
need no tool, or ask for something no tool can do and are declined.

Only arguments the local brain's constrained decoder can write are drawn (see
`agent.brains.constrained.call_arguments`), so every target call is one the embedded
model can produce. The split is by phrasing family and by intent phrase: a test
conversation's template family and intent wording never occur in training.

Also here: `convert_llava`, GeoChat/LLaVA instruction JSON -> chat messages with
image parts, for VLM training.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from finetune.phrasing import (
    DECLINE,
    FAMILIES,
    INTENTS,
    NO_TOOL,
    TEST_FAMILIES,
    Family,
    intent_split,
    intents_from_description,
    misspell,
)

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

    from tools.registry import ToolSpec

Split = Literal["train", "test"]

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
# "measure flood_1 in" + "within post" -> "measure flood_1 in post"
DOUBLED_PREPOSITION = re.compile(
    r"\b(in|inside|within|over|to|into|on)\s+(?:inside|within|over the region|in)\b"
)


@dataclass
class Example:
    """One conversation. `messages` are role dicts: user {content}; assistant
    {content, tool_calls: [{name, args}]}; tool {name, content}. The last assistant
    step that follows the last user message is what the test split measures."""

    id: str
    family: str
    style: str
    kind: str  # call, followup, no_tool, decline
    scenes: dict[str, str]  # handle -> kind (scene, vector)
    messages: list[dict[str, Any]]
    results: dict[str, str] = field(default_factory=dict)  # handle -> tool that made it

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Example:
        return cls(**json.loads(line))


@dataclass(frozen=True)
class BuildConfig:
    n_train: int = 3000
    n_test: int = 300
    seed: int = 0
    followup_share: float = 0.25
    no_tool_share: float = 0.06
    decline_share: float = 0.06


# -- argument values ----------------------------------------------------------------


@dataclass
class Session:
    scenes: dict[str, str]
    pair: tuple[str, str]
    results: dict[str, str] = field(default_factory=dict)

    @property
    def scene_handles(self) -> list[str]:
        return list(self.scenes)


def new_session(rng: random.Random) -> Session:
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
    pre, post = session.pair
    chosen: dict[str, Any] = {}
    for arg in offered:
        prop = props[arg.name]
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
    del pre, post
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
    intent = rng.choice(intent_split(intents[form], split))
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
            pieces.append(rng.choice(DEICTIC_SCENE[pair.index(single)]))
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


# -- tool results and answers -----------------------------------------------------


def fake_result(spec: ToolSpec, args: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Plausible scalar fields of the tool's result model (what the brain reads)."""
    out: dict[str, Any] = {}
    for name, info in spec.result_model().model_fields.items():
        text = str(info.annotation)
        if name in args and isinstance(args[name], str):
            out[name] = args[name]
        elif name in ("output", "geojson", "quicklook", "path"):
            continue
        elif "float" in text and "list" not in text and "dict" not in text:
            if name.endswith("_ha"):
                out[name] = round(rng.uniform(0.5, 3000), rng.choice((1, 2)))
            elif "fraction" in name or "share" in name:
                out[name] = round(rng.uniform(0.001, 0.6), 4)
            elif name in ("seconds", "took_ms"):
                out[name] = round(rng.uniform(0.1, 20), 2)
            else:
                out[name] = round(rng.uniform(-0.4, 0.9), 4)
        elif text.startswith("<class 'int'>") or text == "int | None":
            out[name] = rng.randint(3, 250000)
        elif "Literal" in text and info.annotation is not None:
            choices = getattr(info.annotation, "__args__", ())
            if choices:
                out[name] = rng.choice(choices)
        elif "str" in text and "list" not in text and "dict" not in text:
            value = _string_field(name, rng)
            if value is not None:
                out[name] = value
    return out


def _string_field(name: str, rng: random.Random) -> str | None:
    known = {
        "sensor": ("sentinel2_l2a", "sentinel2_l1c", "landsat8", "sentinel1"),
        "date": ("2019-09-13", "2021-07-02", "2023-02-18"),
        "crs": ("EPSG:32630", "EPSG:32615", "EPSG:3857"),
        "kind": ("index", "sensor"),
        "dominant": ("dense_vegetation", "water", "built_up", "bare_soil"),
        "threshold_method": ("otsu", "floor"),
    }
    return rng.choice(known[name]) if name in known else None


def answer_for(spec: ToolSpec, handle: str, data: dict[str, Any], rng: random.Random) -> str:
    """A one- or two-sentence answer that quotes the result's numbers."""
    numbers = [k for k, v in data.items() if isinstance(v, float | int) and not isinstance(v, bool)]
    dull = ("pixels", "seconds", "took_ms", "centre", "width", "height", "valid", "region_")
    ranked = sorted(
        numbers,
        key=lambda k: (any(d in k for d in dull), not k.endswith("_ha"), "fraction" not in k),
    )
    parts = []
    for key in ranked[:2]:
        value = data[key]
        label = key.removesuffix("_ha").replace("_", " ")
        if key.endswith("_ha"):
            parts.append(f"{label} {_round(value)} ha")
        elif "fraction" in key or "share" in key:
            parts.append(f"{label} {value * 100:.1f}%")
        else:
            parts.append(f"{label} {_round(value)}")
    if not parts:
        texts = [f"{k} {v}" for k, v in data.items() if isinstance(v, str) and k != "handle"]
        parts = texts[:2] or [spec.name.replace("_", " ") + " done"]
    body = "; ".join(parts)
    body = body[0].upper() + body[1:]
    return rng.choice(
        (f"{body} ({handle}).", f"{body}, saved as {handle}.", f"Result {handle}: {body}.")
    )


def _round(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return str(round(value, 3) if abs(value) < 100 else round(value, 1))


# -- conversations ----------------------------------------------------------------


def _call_turn(
    spec: ToolSpec,
    args: dict[str, Any],
    session: Session,
    rng: random.Random,
) -> list[dict[str, Any]]:
    handle = _next_handle(spec, args, session)
    data = fake_result(spec, args, rng)
    # a few fields keep histories short enough to train on; answers quote the first ones
    data = dict(list(data.items())[: rng.randint(3, 6)]) if len(data) > 6 else data
    session.results[handle] = spec.name
    return [
        {"role": "assistant", "content": "", "tool_calls": [{"name": spec.name, "args": args}]},
        {
            "role": "tool",
            "name": spec.name,
            "content": json.dumps({"handle": handle, **data}, ensure_ascii=False),
        },
        {"role": "assistant", "content": answer_for(spec, handle, data, rng), "tool_calls": []},
    ]


def _next_handle(spec: ToolSpec, args: dict[str, Any], session: Session) -> str:
    prefix = spec.prefix_for(spec.args_model.model_validate(args))
    n = 1
    while f"{prefix}_{n}" in session.results or f"{prefix}_{n}" in session.scenes:
        n += 1
    return f"{prefix}_{n}"


def _families(split: Split) -> list[Family]:
    return [f for f in FAMILIES if (f.name in TEST_FAMILIES) == (split == "test")]


def build_examples(
    tools: Sequence[ToolSpec], n: int, split: Split, seed: int, config: BuildConfig | None = None
) -> list[Example]:
    """`n` conversations of one split, deterministic given the seed."""
    config = config or BuildConfig()
    rng = random.Random(f"{seed}-{split}")
    families = _families(split)
    by_name = {spec.name: spec for spec in tools}
    result_tools = [s for s in tools if _takes_result(s)]
    scene_tools = [s for s in tools if not _takes_result(s)]
    # tools whose result is a map a follow-up can export or measure
    mapping_tools = [s for s in scene_tools if "output" in s.result_model().model_fields]
    examples: list[Example] = []
    attempts = 0
    while len(examples) < n and attempts < n * 20:
        attempts += 1
        family = rng.choice(families)
        session = new_session(rng)
        roll = rng.random()
        messages: list[dict[str, Any]] = []
        if roll < config.no_tool_share + config.decline_share:
            bank = NO_TOOL if roll < config.no_tool_share else DECLINE
            request, reply = rng.choice(bank)
            kind = "no_tool" if bank is NO_TOOL else "decline"
            if rng.random() < 0.4:  # after an analysis, so the model sees history too
                spec = rng.choice(scene_tools)
                args = draw_arguments(spec, session, rng)
                if args is None:
                    continue
                messages.append(
                    {
                        "role": "user",
                        "content": word_request(spec, args, family, split, rng, pair=session.pair),
                    }
                )
                messages += _call_turn(spec, args, session, rng)
            text = misspell(request, family.typos, rng) if family.typos else request
            messages.append({"role": "user", "content": text})
            messages.append({"role": "assistant", "content": reply, "tool_calls": []})
        else:
            followup = roll > 1 - config.followup_share and result_tools
            first = rng.choice(mapping_tools if followup else scene_tools)
            args = draw_arguments(first, session, rng)
            if args is None:
                continue
            messages.append(
                {
                    "role": "user",
                    "content": word_request(first, args, family, split, rng, pair=session.pair),
                }
            )
            messages += _call_turn(first, args, session, rng)
            kind = "call"
            if followup:
                spec = rng.choice(result_tools)
                args = draw_arguments(spec, session, rng)
                if args is None:
                    continue
                refer = rng.random() < 0.3 and list(session.results)[-1] == args.get("result")
                messages.append(
                    {
                        "role": "user",
                        "content": word_request(
                            spec, args, family, split, rng, refer_to_it=refer, pair=session.pair
                        ),
                    }
                )
                messages += _call_turn(spec, args, session, rng)
                kind = "followup"
        examples.append(
            Example(
                id=f"{split}-{len(examples):05d}",
                family=family.name,
                style=family.style,
                kind=kind,
                scenes=dict(session.scenes),
                messages=messages,
                results=dict(session.results),
            )
        )
    del by_name
    return examples


def _takes_result(spec: ToolSpec) -> bool:
    props = spec.parameters_schema().get("properties", {})
    return any(
        p.get("description", "").lower().startswith("handle")
        and "result" in p.get("description", "").lower().split(",")[0]
        for p in props.values()
    )


def build_splits(
    tools: Sequence[ToolSpec] | None = None, config: BuildConfig | None = None
) -> dict[str, list[Example]]:
    from tools.registry import get_registry

    config = config or BuildConfig()
    tools = list(tools if tools is not None else get_registry())
    return {
        "train": build_examples(tools, config.n_train, "train", config.seed, config),
        "test": build_examples(tools, config.n_test, "test", config.seed, config),
    }


def write_jsonl(examples: Iterable[Example], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(e.to_json() + "\n" for e in examples), encoding="utf-8")
    tmp.replace(path)
    return path


def read_jsonl(path: Path) -> list[Example]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Example.from_json(line) for line in lines if line.strip()]


# -- to the agent's messages ------------------------------------------------------


def system_text(system_prompt: str, scenes: dict[str, str], results: dict[str, str]) -> str:
    """The system message the agent loop sends: prompt plus `Session.describe()`."""
    suffix = {"scene": ".tif", "vector": ".geojson"}
    lines = [f"{h}: {k} {h}{suffix.get(k, '')}" for h, k in scenes.items()]
    lines += [f"{h}: result of {tool}" for h, tool in results.items()]
    return f"{system_prompt}\n\nIn this session:\n" + "\n".join(lines)


def to_messages(example: Example, system_prompt: str, upto: int | None = None) -> list[BaseMessage]:
    """LangChain messages of the conversation (its first `upto` role dicts), with the
    session as the loop describes it at that point (results made so far)."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    rows = example.messages[:upto]
    made: dict[str, str] = {}
    out: list[BaseMessage] = []
    for i, row in enumerate(rows):
        if row["role"] == "user":
            out.append(HumanMessage(row["content"]))
        elif row["role"] == "assistant":
            calls = [
                {"name": c["name"], "args": c["args"], "id": f"call_{i}_{j}", "type": "tool_call"}
                for j, c in enumerate(row.get("tool_calls", []))
            ]
            out.append(AIMessage(content=row["content"], tool_calls=calls))
        elif row["role"] == "tool":
            out.append(
                ToolMessage(
                    content=row["content"], tool_call_id=f"call_{i - 1}_0", name=row["name"]
                )
            )
            handle = json.loads(row["content"]).get("handle")
            if handle:
                made[handle] = row["name"]
    return [SystemMessage(system_text(system_prompt, example.scenes, made)), *out]


def final_step(example: Example) -> int:
    """Index of the assistant step answering the last user message."""
    last_user = max(i for i, m in enumerate(example.messages) if m["role"] == "user")
    return last_user + 1


# -- GeoChat / LLaVA instruction data -------------------------------------------------


def convert_llava(
    records: Sequence[dict[str, Any]] | Path, image_root: Path | None = None
) -> list[dict[str, Any]]:
    """GeoChat/LLaVA instruction records ({"id", "image", "conversations": [{"from":
    "human"|"gpt", "value": "<image>\\n..."}]}) as chat examples {"id", "images":
    [path], "messages": [{"role", "content": [{"type": "image"} | {"type": "text",
    "text"}]}]} that a processor's chat template renders."""
    rows: Sequence[dict[str, Any]] = (
        json.loads(records.read_text(encoding="utf-8")) if isinstance(records, Path) else records
    )
    roles = {
        "human": "user",
        "user": "user",
        "gpt": "assistant",
        "assistant": "assistant",
        "system": "system",
    }
    out = []
    for n, record in enumerate(rows):
        images = record.get("image") or []
        images = [images] if isinstance(images, str) else list(images)
        if image_root is not None:
            images = [str(image_root / p) for p in images]
        messages = []
        for turn in record.get("conversations", []):
            role = roles.get(str(turn.get("from", "")).lower())
            if role is None:
                raise ValueError(
                    f"record {record.get('id', n)}: unknown speaker {turn.get('from')!r}"
                    " (expected human or gpt)"
                )
            value = str(turn.get("value", ""))
            content: list[dict[str, Any]] = []
            pieces = value.split("<image>")
            for k, piece in enumerate(pieces):
                if k > 0:
                    content.append({"type": "image"})
                if piece.strip():
                    content.append({"type": "text", "text": piece.strip()})
            messages.append({"role": role, "content": content})
        out.append({"id": str(record.get("id", n)), "images": images, "messages": messages})
    return out
