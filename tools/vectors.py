"""Reading polygon GeoJSON (building footprints, regions of interest) with clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyproj import CRS

from tools.errors import EmptyResultError, InputFileError

CRS84 = "OGC:CRS84"


def read_polygons(path: str | Path, what: str = "polygons") -> tuple[list[dict[str, Any]], CRS]:
    """The Polygon/MultiPolygon features of a GeoJSON file and the file's CRS.

    `what` names the polygons in error messages ("building outlines", "regions")."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path} does not exist; give the path of a GeoJSON of {what}.")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputFileError(
            f"{path.name} is not valid GeoJSON ({type(exc).__name__}); re-export it as a "
            f"GeoJSON FeatureCollection of {what}."
        ) from exc
    if isinstance(data, dict) and data.get("type") == "Feature":
        data = {"type": "FeatureCollection", "features": [data]}
    raw = data.get("features") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        raise InputFileError(
            f"{path.name} is not a GeoJSON FeatureCollection; give a FeatureCollection of {what}."
        )
    polygons = [
        f
        for f in raw
        if isinstance(f, dict)
        and isinstance(f.get("geometry"), dict)
        and f["geometry"].get("type") in ("Polygon", "MultiPolygon")
        and f["geometry"].get("coordinates")
    ]
    if not polygons:
        raise EmptyResultError(
            f"{path.name} holds no Polygon or MultiPolygon features ({len(raw)} features); "
            f"this needs {what}, not points or lines."
        )
    return polygons, geojson_crs(data)


def geojson_crs(data: dict[str, Any]) -> CRS:
    # RFC 7946 GeoJSON is lon/lat WGS84; older files may still name a CRS, and
    # EPSG:4326 in a legacy file is written lon/lat in practice, like CRS84.
    name = ((data.get("crs") or {}).get("properties") or {}).get("name")
    if not name:
        return CRS.from_user_input(CRS84)
    try:
        crs = CRS.from_user_input(name)
    except Exception as exc:
        raise InputFileError(
            f"GeoJSON CRS {name!r} is not recognised; reproject the file to WGS84 (CRS84)."
        ) from exc
    return CRS.from_user_input(CRS84) if crs.to_epsg() == 4326 else crs
