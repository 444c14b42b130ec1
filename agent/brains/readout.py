"""A tool result as a small model reads it: the fields an answer quotes, in a few hundred
characters of JSON.

Scalars stay (numbers rounded). What a user asks about but sits in structures stays too,
flattened: per-class tables (`counts`, `shares`, `area_ha`) keep their non-zero entries,
lists of records (`classes`, `labels`, `hits`) become `{name: measure}` under a key that
says the measure (`classes_area_ha`, `labels_probability`), a file keeps its name. Pixel
counts, timings, map file paths (shown as artefacts), notes and bounding boxes go. The
same function renders the training data's results (via `LocalBrain.segments`), so what
the adapter learnt to read is what it is given.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePath, PureWindowsPath
from typing import Any

MAX_TEXT = 480
MAX_ENTRIES = 5
MAX_STRING = 320
_ARTEFACTS = {"output", "geojson", "quicklook", "source", "reference", "contributor"}
_DULL = re.compile(r"(^|_)(pixels|seconds|took_ms|views|labels_considered|tiles|bytes|notes)$")
_NAMES = ("name", "label", "path", "id")  # what names a record in a list
_WINDOWS = re.compile(r"^[A-Za-z]:[\\/]")
_MEASURES = ("area_ha", "probability", "score", "share", "fraction", "count")


def compact_result(text: str) -> str:
    """The result JSON cut to what an answer needs, or the first characters of an error."""
    try:
        data = json.loads(text)
    except ValueError:
        return text[:MAX_TEXT]
    if not isinstance(data, dict):
        return text[:MAX_TEXT]
    scalars: dict[str, Any] = {}
    tables: dict[str, Any] = {}
    for key, value in data.items():
        if key in _ARTEFACTS or _DULL.search(key):
            continue
        if isinstance(value, dict | list):
            small = _table(key, value)
            if small:
                tables.update(small)
        else:
            small = _scalar(key, value)
            if small is not None:
                scalars[_percent_key(key, value)] = _percent(key, value, small)
    out = json.dumps({**scalars, **tables}, ensure_ascii=False)
    return out if len(out) <= MAX_TEXT else _cut(out)


def _scalar(key: str, value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        if value and abs(value) < 0.01:
            return float(f"{value:.2g}")  # a scale factor of 0.0001 is not 0
        return round(value, 3) if abs(value) < 100 else round(value, 1)
    if isinstance(value, int):
        return value
    if not isinstance(value, str) or not value:
        return None
    if _is_path(value):
        return _file_name(value) if key in ("path", "name") else None
    return value if len(value) <= MAX_STRING else value[: MAX_STRING - 4].rsplit(" ", 1)[0] + " ..."


def _is_share(key: str, value: Any) -> bool:
    """A 0-1 share the answer states in percent: the small model copies numbers more
    reliably than it multiplies them."""
    return (
        any(w in key for w in ("fraction", "share", "probability"))
        and not key.endswith("_pct")
        and isinstance(value, float)
        and 0.0 <= value <= 1.0
    )


def _percent_key(key: str, value: Any) -> str:
    return f"{key}_pct" if _is_share(key, value) else key


def _percent(key: str, value: Any, small: Any) -> Any:
    return round(value * 100, 1) if _is_share(key, value) else small


def _table(key: str, value: dict[str, Any] | list[Any], depth: int = 0) -> dict[str, Any]:
    """A structure as zero, one or several flat entries of the output."""
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return _records(key, value)
        if value and all(isinstance(v, str) for v in value) and len(value) <= 16:
            return {key: [_file_name(v) if _is_path(v) else v for v in value]}  # bands, files
        if value and all(isinstance(v, int | float) for v in value) and len(value) <= 2:
            return {key: [_scalar(key, v) for v in value]}  # resolution, a centre
        return {}
    if value and all(isinstance(v, dict) for v in value.values()):
        return _records(key, [{"name": k, **v} for k, v in value.items()])  # per-class dicts
    numeric = [v for v in value.values() if isinstance(v, int | float) and not isinstance(v, bool)]
    if value and len(numeric) == len(value):
        return _numbers(key, value)
    entries: dict[str, Any] = {}  # a mixed record: a sensor's or an index's facts
    for k, v in value.items():
        if isinstance(v, dict | list):
            if depth == 0 and not _DULL.search(k):
                entries.update(_table(k, v, depth + 1))
        elif not _DULL.search(k) and (small := _scalar(k, v)) is not None:
            entries[k] = small
    if len({str(v) for v in entries.values()}) < 2:  # nothing, or 12 x "reflectance"
        return {}
    return {key: dict(list(entries.items())[: MAX_ENTRIES + 2])}


def _numbers(key: str, value: dict[str, Any]) -> dict[str, Any]:
    """A per-class table of numbers; a long one keeps its non-zero entries, a short one
    its zeros too ("destroyed: 0"). Shares are given in percent."""
    many = len(value) > MAX_ENTRIES
    shares = all(_is_share(key, float(v)) for v in value.values())
    table = {
        k: round(float(v) * 100, 1) if shares else _scalar(k, v)
        for k, v in value.items()
        if v or not many
    }
    if not table:
        return {}
    return {_percent_key(key, 0.5) if shares else key: dict(list(table.items())[:MAX_ENTRIES])}


def _records(key: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """`[{name, area_ha, ...}, ...]` -> `{key_area_ha: {name: area}}`, zeros left out."""
    first = records[0]
    name_field = next((f for f in _NAMES if isinstance(first.get(f), str)), None)
    measure = next((m for m in _MEASURES if isinstance(first.get(m), int | float)), None)
    if name_field is None:
        return {}
    if measure is None:  # named items without a number: their names
        names = [
            _file_name(r[name_field]) if _is_path(r[name_field]) else r[name_field]
            for r in records
            if isinstance(r.get(name_field), str)
        ]
        return {key: names[:16]}
    many = len(records) > MAX_ENTRIES
    table: dict[str, Any] = {}
    for record in records:
        name, number = record.get(name_field), record.get(measure)
        if not isinstance(name, str) or not isinstance(number, int | float) or not number and many:
            continue
        label = _file_name(name) if name_field == "path" else name
        table[label] = _percent(measure, float(number), _scalar(measure, number))
        if len(table) == MAX_ENTRIES:
            break
    return {_percent_key(f"{key}_{measure}", 0.5): table} if table else {}


def _is_path(text: str) -> bool:
    """A file path or URL, not a formula like (N-R)/(N+R)."""
    return text.startswith(("/", "~", "./")) or "://" in text or bool(_WINDOWS.match(text))


def _file_name(path: str) -> str:
    return (PureWindowsPath if _WINDOWS.match(path) else PurePath)(path).name


def _cut(text: str) -> str:
    """Whole top-level entries up to the limit, still valid JSON."""
    data = json.loads(text)
    kept: dict[str, Any] = {}
    for key, value in data.items():
        trial = json.dumps({**kept, key: value}, ensure_ascii=False)
        if len(trial) > MAX_TEXT:
            continue
        kept[key] = value
    return json.dumps(kept, ensure_ascii=False)
