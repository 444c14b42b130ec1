"""Tool results for the training conversations, and the answers that quote them.

`fake_result` fills a tool's result model with plausible values: scalars from their
names and types, and the structures a user asks about (per-class areas and counts, scene
labels, archive hits, band lists, a caption, an index's or a sensor's facts) from the
tools' own vocabularies. `shown_result` is what the brain reads of it: the agent's own
`compact_result`, so training and use see results the same way. `answer_for` words the
answer from that view: the headline text, the quantities with units, a per-class table.
A tool whose fields none of this knows still gets its scalars and a generic answer.
"""

from __future__ import annotations

import json
import random
import re
import typing
from typing import TYPE_CHECKING, Any

from agent.brains.readout import compact_result
from finetune.wording import OBJECTS, SEARCH_TEXTS

if TYPE_CHECKING:
    from tools.registry import ToolSpec

MAX_SHOWN = 7  # fields of a result in a training conversation, handle included
_KNOWN_STRINGS = {
    "sensor": ("sentinel2_l2a", "sentinel2_l1c", "landsat89_oli", "sentinel1_grd", "rgb"),
    "date": ("2019-09-13", "2021-07-02", "2023-02-18", "2024-10-30"),
    "crs": ("EPSG:32630", "EPSG:32615", "EPSG:3857", "EPSG:32633"),
    "kind": ("index", "sensor"),
    "threshold_method": ("otsu", "floor"),
    "units": ("dimensionless",),
}


# -- results ---------------------------------------------------------------------------


def fake_result(spec: ToolSpec, args: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Plausible fields of the tool's result model, structures included."""
    if spec.name == "domain_lookup":
        looked_up = _lookup(str(args.get("topic", "")))
        if looked_up is not None:
            return looked_up
    out: dict[str, Any] = {}
    for name, info in spec.result_model().model_fields.items():
        text = str(info.annotation)
        if name in args and isinstance(args[name], str):
            out[name] = args[name]
        elif "list" in text or "dict" in text:
            value = _structure(spec.name, name, info.annotation, args, rng)
            if value is not None:
                out[name] = value
        elif "float" in text:
            out[name] = _float(name, rng)
        elif text.startswith("<class 'int'>") or text == "int | None":
            out[name] = rng.randint(3, 250000)
        elif "Literal" in text and info.annotation is not None:
            choices = getattr(info.annotation, "__args__", ())
            if choices:
                out[name] = rng.choice(choices)
        elif "str" in text:
            value = _string(spec.name, name, args, rng)
            if value is not None:
                out[name] = value
    return _coherent(out)


def _float(name: str, rng: random.Random) -> float:
    if name.endswith("_ha"):
        return round(rng.uniform(0.5, 3000), rng.choice((1, 2)))
    if "fraction" in name or "share" in name:
        return round(rng.uniform(0.001, 0.6), 4)
    if name in ("seconds", "took_ms"):
        return round(rng.uniform(0.1, 20), 2)
    if name.endswith("_m"):
        return rng.choice((0.5, 3.0, 10.0, 20.0, 30.0))
    return round(rng.uniform(-0.4, 0.9), 4)


def _string(tool: str, name: str, args: dict[str, Any], rng: random.Random) -> str | None:
    from tools.sensors import SENSORS

    index = str(args.get("index", ""))
    if name in ("long_name", "formula", "application_domain") and index:
        facts = _index_facts(index)
        return facts.get(name) if facts else None
    if name == "sensor_title":
        return rng.choice([s.title for s in SENSORS.values()])
    if name == "path" and "result" in args:
        return f"/work/exports/{args['result']}.{_EXTENSIONS.get(str(args.get('format')), 'tif')}"
    if name == "query":
        return f"text: {args.get('text') or rng.choice(SEARCH_TEXTS)}"
    if name == "caption":
        return _caption(rng)
    if name == "method" and tool in ("water_mask", "flood_map"):
        return rng.choice(("optical", "sar"))
    return rng.choice(_KNOWN_STRINGS[name]) if name in _KNOWN_STRINGS else None


_EXTENSIONS = {"geotiff": "tif", "geojson": "geojson", "png": "png", "csv": "csv"}


def _index_facts(index: str) -> dict[str, Any] | None:
    from tools.spectral import index_info

    try:
        return index_info(index)
    except Exception:  # noqa: BLE001 - an index spyndex does not know: no facts
        return None


def _lookup(topic: str) -> dict[str, Any] | None:
    """The real catalogue answer: it needs no scene and takes milliseconds."""
    from tools.bindings import domain_lookup
    from tools.registry import DomainLookupArgs

    try:
        return domain_lookup(None, DomainLookupArgs(topic=topic)).model_dump()  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - a topic the catalogue does not hold
        return None


def _caption(rng: random.Random) -> str:
    from tools.landcover import CLASS_NAMES
    from tools.sensors import SENSORS

    title = rng.choice([s.title for s in SENSORS.values()])
    shares = _shares(CLASS_NAMES, rng)
    top = sorted(shares.items(), key=lambda kv: -kv[1])[:3]
    cover = ", ".join(f"{name} {share * 100:.0f}%" for name, share in top if share)
    lat, lon = rng.uniform(-50, 60), rng.uniform(-120, 140)
    return (
        f"{title} image centred near {abs(lat):.2f}°{'N' if lat >= 0 else 'S'}, "
        f"{abs(lon):.2f}°{'E' if lon >= 0 else 'W'}, acquired "
        f"{rng.choice(_KNOWN_STRINGS['date'])}. Land cover: {cover}."
    )


# -- structures ------------------------------------------------------------------------


def _vocabulary(tool: str, name: str, args: dict[str, Any], rng: random.Random) -> list[str]:
    """The names a per-class table or a list of this tool's result holds."""
    from tools.change import BURN_CLASSES, VEGETATION_CLASSES
    from tools.classify import DEFAULT_LABELS
    from tools.damage import DAMAGE_CLASSES
    from tools.landcover import CLASS_NAMES
    from tools.sensors import SENSORS

    burn = [label for label, _, _ in BURN_CLASSES.values()]
    tables: dict[tuple[str, str], list[str]] = {
        ("building_damage", "counts"): list(DAMAGE_CLASSES),
        ("building_damage", "area_ha"): list(DAMAGE_CLASSES),
        ("burn_severity", "classes"): burn,
        ("vegetation_change", "classes"): list(VEGETATION_CLASSES.values()),
        ("land_cover", "classes"): CLASS_NAMES,
        ("land_cover", "shares"): CLASS_NAMES,
        ("describe_scene", "land_cover"): CLASS_NAMES,
        ("classify_scene", "land_cover"): CLASS_NAMES,
        ("classify_scene", "labels"): list(args.get("labels") or DEFAULT_LABELS),
        ("detect_objects", "counts"): list(args.get("classes") or OBJECTS),
        ("detect_objects", "classes"): list(args.get("classes") or OBJECTS),
    }
    if (tool, name) in tables:
        return tables[(tool, name)]
    if tool == "zonal_stats" and name in ("classes", "class_area_ha", "counts"):
        return rng.choice([list(CLASS_NAMES), list(DAMAGE_CLASSES), list(burn)])
    if name in ("hits", "already_indexed", "added"):
        return [_archive_file(rng) for _ in range(rng.randint(2, 5))]
    if name == "bands":
        sensor = rng.choice(list(SENSORS.values()))
        return [b.name for b in sensor.bands]
    return []


def _archive_file(rng: random.Random) -> str:
    mission = rng.choice(("S2A_MSIL2A", "S2B_MSIL2A", "LC09_L2SP", "S1A_IW_GRDH"))
    day = f"20{rng.randint(17, 25)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    return f"/data/archive/{mission}_{day}_{rng.choice(('T30SXH', 'T15TVG', 'T33UVP'))}.tif"


def _shares(names: list[str], rng: random.Random) -> dict[str, float]:
    """Shares over `names` that sum to 1, a third of them zero."""
    weights = [0.0 if rng.random() < 0.35 else rng.random() ** 2 for _ in names]
    if not any(weights):
        weights[rng.randrange(len(weights))] = 1.0
    total = sum(weights)
    return {n: round(w / total, 4) for n, w in zip(names, weights, strict=True)}


def _structure(
    tool: str, name: str, annotation: Any, args: dict[str, Any], rng: random.Random
) -> Any:
    """A per-class dict or a list for a field whose names `_vocabulary` knows."""
    names = _vocabulary(tool, name, args, rng)
    if not names:
        return None
    text = str(annotation)
    ranked = name in ("labels", "hits", "added", "already_indexed")  # most likely first
    if ranked:
        names = rng.sample(names, min(len(names), rng.randint(2, 5)))
    elif "dict" not in text and name == "classes" and tool == "detect_objects":
        names = rng.sample(names, min(len(names), rng.randint(1, 3)))
    shares = _shares(names, rng)
    if ranked:
        shares = dict(zip(names, sorted(shares.values(), reverse=True), strict=True))
    total_ha = rng.uniform(20, 8000)
    if text.startswith("dict[str, int]"):
        return {n: int(s * rng.randint(20, 900)) for n, s in shares.items()}
    if text.startswith("dict[str, float") and name in ("shares", "land_cover"):
        return shares
    if text.startswith("dict[str, float"):
        return {n: round(s * total_ha, 2) for n, s in shares.items()}
    if text.startswith("dict[str, tools."):
        return {n: _record(n, s, total_ha, i, name, rng) for i, (n, s) in enumerate(shares.items())}
    if "list[str]" in text:
        return names
    record_type = next(iter(typing.get_args(annotation)), None)
    if record_type is not None and hasattr(record_type, "model_fields"):
        return [
            _record(n, s, total_ha, i, name, rng, set(record_type.model_fields))
            for i, (n, s) in enumerate(shares.items())
        ]
    return None


def _record(
    label: str,
    share: float,
    total_ha: float,
    i: int,
    field: str,
    rng: random.Random,
    fields: set[str] | None = None,
) -> dict[str, Any]:
    """One row of a per-class table or list, with the fields its model has."""
    fields = fields or {"pixels", "area_ha", "share"}
    values: dict[str, Any] = {
        "code": i + 1,
        "rank": i + 1,
        "name": label,
        "label": label,
        "path": label,
        "id": f"scene-{rng.getrandbits(48):012x}",
        "pixels": int(share * rng.randint(10_000, 2_000_000)),
        "area_ha": round(share * total_ha, 2),
        "fraction": share,
        "share": share,
        "probability": share,
        "score": round(0.2 + 0.7 * share, 4),
        "caption": _caption(rng) if field in ("hits", "added") else None,
    }
    return {k: v for k, v in values.items() if k in fields and v is not None}


def _coherent(out: dict[str, Any]) -> dict[str, Any]:
    """Fields that restate others agree with them: the top label is the first label,
    the dominant class the largest share."""
    from tools.sensors import SENSORS

    if out.get("sensor") in SENSORS and "sensor_title" in out:
        out["sensor_title"] = SENSORS[out["sensor"]].title
    counts = out.get("counts")
    if isinstance(counts, dict) and isinstance(out.get("count"), int):
        out["count"] = sum(counts.values())
    labels = out.get("labels")
    if isinstance(labels, list) and labels and "label" in labels[0]:
        out["top_label"] = labels[0]["label"]
    shares = out.get("shares")
    if isinstance(shares, dict) and shares:
        out["dominant"] = max(shares, key=lambda name: shares[name])
    return out


def shown_result(
    handle: str, data: dict[str, Any], rng: random.Random, tool: str
) -> dict[str, Any]:
    """What the brain reads of a result (the agent's `compact_result`); in training a
    random few fields besides the headline ones and the figure the tool is asked for
    (an index's mean, the flooded area), to keep histories short."""
    shown = json.loads(compact_result(json.dumps({"handle": handle, **data}, default=str)))
    if len(shown) <= MAX_SHOWN:
        return shown
    keep = {"handle", *(k for k in shown if k in _HEADLINES or isinstance(shown[k], dict))}
    rest = [k for k in shown if k not in keep]
    keep |= set(rng.sample(rest, max(0, MAX_SHOWN - len(keep))))
    # added after the draw, so the conversations' random choices stay what they were
    topical = _topical(tool)
    keep |= {k for k in shown if k == "mean" or any(w in k for w in topical)}
    return {k: v for k, v in shown.items() if k in keep}


# -- answers -----------------------------------------------------------------------------

_HEADLINES = (
    "caption",
    "top_label",
    "title",
    "sensor_title",
    "long_name",
    "formula",
    "path",
    "dominant",
)
_CONTEXT = ("date", "crs")
_SAID = {
    "top_label": "most likely class",
    "sensor_title": "sensor",
    "title": "sensor",
    "long_name": "index",
    "path": "file",
    "dominant": "dominant class",
}
_DULL = (  # kept by compact_result but not what an answer leads with
    "centre",
    "width",
    "height",
    "valid",
    "region_",
    "threshold",
    "archive_size",
    "std",
    "min",
    "max",
    "seed",
    "steps",
    "features",
    "in_scene",
    "outside",
)


def answer_for(spec: ToolSpec, handle: str, shown: dict[str, Any], rng: random.Random) -> str:
    """One or two sentences from what the brain read: the headline text, then up to two
    quantities with units, then the first per-class table."""
    parts: list[str] = []
    for key in _HEADLINES:
        value = shown.get(key)
        if isinstance(value, str) and len(parts) < 2:
            parts.append(
                value.rstrip(".") if key == "caption" else f"{_SAID.get(key, _words(key))} {value}"
            )
    for key in _CONTEXT:  # when the headline is a sensor: its date and grid
        if isinstance(shown.get(key), str) and "sensor" in " ".join(parts) and len(parts) < 3:
            parts.append(f"{_words(key)} {shown[key]}")
    sized = isinstance(shown.get("width"), int) and isinstance(shown.get("height"), int)
    if sized:
        parts.append(f"{shown['width']} x {shown['height']} px")
    numbers = [
        k for k, v in shown.items() if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    topical = _topical(spec.name)
    ranked = sorted(
        numbers,
        key=lambda k: (
            any(d in k for d in _DULL),
            not any(w in k for w in topical),
            not k.endswith("_ha"),
            not k.endswith("_pct"),
        ),
    )
    lively = [k for k in ranked if not any(d in k for d in _DULL)]
    for key in (lively or ([] if sized else ranked))[: 2 if len(parts) < 2 else 1]:
        parts.append(_quantity(key, shown[key]))
    tables = [(k, v) for k, v in shown.items() if isinstance(v, dict) and k != "thresholds"]
    if tables and len(parts) < 4:
        key, table = tables[0]
        unit = _unit(key)
        entries = [
            f"{_words(name) if isinstance(v, str) else name} {_number(v)}{unit}"
            for name, v in list(table.items())[:4]
        ]
        if entries:
            parts.append(f"{_words(key.removesuffix('_pct'))}: {', '.join(entries)}")
    bands = shown.get("bands")
    if isinstance(bands, list) and len(parts) < 3:
        more = ", ..." if len(bands) > 6 else ""
        parts.append(f"bands {', '.join(map(str, bands[:6]))}{more}")  # copied, not counted
    if not parts:
        texts = [
            f"{_words(k)} {v}" for k, v in shown.items() if isinstance(v, str) and k != "handle"
        ]
        parts = texts[:2] or [spec.name.replace("_", " ") + " done"]
    body = "; ".join(parts)
    body = body[0].upper() + body[1:]
    return rng.choice(
        (f"{body} ({handle}).", f"{body}, saved as {handle}.", f"Result {handle}: {body}.")
    )


def _topical(tool: str) -> list[str]:
    """Stems of the tool's name that its headline fields share (flood_map: 'flooded_area')."""
    return [w[:5] for w in tool.split("_") if len(w) > 3]


def _words(key: str) -> str:
    return key.removesuffix("_ha").removesuffix("_pct").replace("_", " ")


def _unit(key: str) -> str:
    if key.endswith("_pct"):
        return "%"
    if key.endswith("_ha") or key == "area_ha":
        return " ha"
    return ""


def _quantity(key: str, value: float) -> str:
    return f"{_words(key)} {_number(value)}{_unit(key)}"


def _number(value: Any) -> str:
    """As shown: `compact_result` has rounded it, and the answer copies it."""
    return str(value)


# -- failed calls ------------------------------------------------------------------------

_WEIGHTS = {  # tools that need configured weights -> their setting
    "ground": "grounding_model",
    "detect_objects": "detector_model",
    "segment": "sam_model",
}
_NEEDS_BANDS = (
    "spectral_index",
    "water_mask",
    "flood_map",
    "burn_severity",
    "vegetation_change",
    "land_cover",
)


def fake_error(spec: ToolSpec, args: dict[str, Any], rng: random.Random) -> tuple[str, str] | None:
    """(the error the agent's loop returns when this call raises one of the tools'
    exceptions, and its reason in one sentence); None when no plausible one fits."""
    from agent.loop import failure_text
    from tools.errors import BandError, EmptyResultError, NoOverlapError
    from tools.segmentation import SEGMENT_HINT
    from tools.vision_models import weights_missing

    choices: list[Exception] = []
    if spec.name in _WEIGHTS:
        hint = SEGMENT_HINT if spec.name == "segment" else ""
        choices.append(weights_missing(_WEIGHTS[spec.name], spec.name, hint))
    scene = args.get("scene") or args.get("post")
    if isinstance(scene, str) and spec.name in _NEEDS_BANDS:
        needed = rng.choice((["nir"], ["swir1"], ["nir", "swir2"], ["green", "swir1"]))
        purpose = str(args.get("index") or spec.name)
        choices.append(
            BandError(
                f"{purpose} needs band(s) {', '.join(needed)} but {scene}.tif has red, green, "
                "blue; map bands explicitly (e.g. --bands nir=4,red=3) or use a scene that "
                "has them."
            )
        )
    pair = [
        args.get(k) for k in ("pre", "post", "result", "region") if isinstance(args.get(k), str)
    ]
    if len(pair) >= 2:
        choices.append(
            NoOverlapError(
                f"{pair[0]} and {pair[1]} do not overlap: they cover different places. "
                "Measure it inside a region of the same area."
            )
        )
    if spec.name in (*_NEEDS_BANDS, "change_detection"):
        choices.append(EmptyResultError("No valid pixels to choose a threshold from."))
    if not choices:
        return None
    exc = rng.choice(choices)
    return failure_text(spec.name, args, exc), _SENTENCE.split(str(exc))[0].rstrip(".")


_SENTENCE = re.compile(r"(?<!e\.g)\. |; ")


def error_answer(spec: ToolSpec, reason: str, rng: random.Random) -> str:
    """The answer after a failed call: what failed and why, in the tool's own words; no
    numbers that were never computed."""
    opening = rng.choice(
        (f"{spec.name} failed", f"I could not run {spec.name}", f"{spec.name} did not run")
    )
    return f"{opening}: {reason}."
