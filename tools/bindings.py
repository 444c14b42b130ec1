"""The tools as the agent calls them: `(session, args) -> result`.

Each function turns handles into scenes and files through the session (which refuses
paths outside its workspace), calls the plain tool function, and writes outputs under
the session's results folder named after the handle the result will get. Tool modules
are imported inside the functions: importing this module costs nothing, and a tool
module that is missing disables only its own tool, with a message saying so.
"""

from __future__ import annotations

import contextlib
import importlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from tools.errors import ArgumentError, EOError

if TYPE_CHECKING:
    from agent.session import Session
    from tools.registry import (
        AddToArchiveArgs,
        BuildingDamageArgs,
        BurnSeverityArgs,
        ChangeDetectionArgs,
        ClassifySceneArgs,
        DescribeSceneArgs,
        DetectObjectsArgs,
        DomainLookupArgs,
        ExportArgs,
        FloodMapArgs,
        GroundArgs,
        LandCoverArgs,
        SceneInfoArgs,
        SearchArchiveArgs,
        SegmentArgs,
        SpectralIndexArgs,
        SynthesizeImageArgs,
        VegetationChangeArgs,
        WaterMaskArgs,
        ZonalStatsArgs,
    )


class ToolUnavailableError(EOError):
    """The module that implements a tool is not installed or not written yet."""


def _tool_module(name: str) -> Any:
    try:
        return importlib.import_module(f"tools.{name}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name != f"tools.{name}":
            raise ToolUnavailableError(
                f"This tool needs the package '{exc.name}', which is not installed; "
                f"install it with `pip install {exc.name}` or use another tool."
            ) from exc
        raise ToolUnavailableError(
            f"The tool module tools/{name}.py is not available in this installation; "
            "use another tool."
        ) from exc


# -- results of the tools defined here ------------------------------------------------


class SceneInfoResult(BaseModel):
    """What a loaded scene is and where it lies."""

    scene: str = Field(description="handle of the scene")
    source: str
    sensor: str | None
    sensor_title: str
    date: str | None
    bands: list[str] = Field(description="common band names, e.g. red, nir, swir1, VV")
    band_units: dict[str, str]
    width: int
    height: int
    crs: str | None
    resolution: list[float]
    bounds: list[float]
    bounds_epsg4326: list[float] | None
    notes: list[str] = Field(default_factory=list)


class ExportResult(BaseModel):
    """A result written as a file."""

    result: str = Field(description="handle of the exported result")
    format: str
    path: str = Field(description="the file written")
    bytes: int
    features: int | None = Field(default=None, description="polygons written (GeoJSON)")


class LookupResult(BaseModel):
    """Catalogue knowledge about an index or a sensor."""

    kind: str = Field(description="index or sensor")
    name: str
    data: dict[str, Any]


# -- scene tools ----------------------------------------------------------------------


def scene_info(session: Session, args: SceneInfoArgs) -> SceneInfoResult:
    handle = session.scene_handle(args.scene)
    summary = session.scene(handle).summary()
    bands: dict[str, dict[str, Any]] = summary["bands"]  # type: ignore[assignment]
    return SceneInfoResult(
        scene=handle,
        source=str(summary["source"]),
        sensor=summary["sensor"],  # type: ignore[arg-type]
        sensor_title=str(summary["sensor_title"]),
        date=summary["date"],  # type: ignore[arg-type]
        bands=list(bands),
        band_units={name: str(b["units"]) for name, b in bands.items()},
        width=int(summary["width"]),  # type: ignore[call-overload]
        height=int(summary["height"]),  # type: ignore[call-overload]
        crs=summary["crs"],  # type: ignore[arg-type]
        resolution=list(summary["resolution"]),  # type: ignore[call-overload]
        bounds=list(summary["bounds"]),  # type: ignore[call-overload]
        bounds_epsg4326=summary["bounds_epsg4326"],  # type: ignore[arg-type]
        notes=list(summary["notes"]),  # type: ignore[call-overload]
    )


def spectral_index(session: Session, args: SpectralIndexArgs) -> BaseModel:
    module = _tool_module("spectral")
    return module.spectral_index(  # type: ignore[no-any-return]
        session.scene(args.scene),
        args.index,
        out=session.output_path(".tif"),
        constants=args.constants,
    )


def water_mask(session: Session, args: WaterMaskArgs) -> BaseModel:
    module = _tool_module("water")
    scenes = [session.scene(ref) for ref in args.scenes]
    return module.water_mask(scenes, out=session.output_path(".tif"), method=args.method)  # type: ignore[no-any-return]


def flood_map(session: Session, args: FloodMapArgs) -> BaseModel:
    module = _tool_module("water")
    post = [session.scene(ref) for ref in args.post]
    pre = [session.scene(ref) for ref in args.pre] if args.pre else None
    return module.flood_map(  # type: ignore[no-any-return]
        post, pre, out=session.output_path(".tif"), align=args.align, method=args.method
    )


def burn_severity(session: Session, args: BurnSeverityArgs) -> BaseModel:
    module = _tool_module("change")
    return module.burn_severity(  # type: ignore[no-any-return]
        session.scene(args.pre),
        session.scene(args.post),
        out=session.output_path(".tif"),
        align=args.align,
    )


def vegetation_change(session: Session, args: VegetationChangeArgs) -> BaseModel:
    module = _tool_module("change")
    return module.vegetation_change(  # type: ignore[no-any-return]
        session.scene(args.pre),
        session.scene(args.post),
        out=session.output_path(".tif"),
        align=args.align,
        threshold=args.threshold,
    )


def change_detection(session: Session, args: ChangeDetectionArgs) -> BaseModel:
    module = _tool_module("change")
    return module.change_detection(  # type: ignore[no-any-return]
        session.scene(args.pre),
        session.scene(args.post),
        out=session.output_path(".tif"),
        align=args.align,
        method=args.method,
    )


def building_damage(session: Session, args: BuildingDamageArgs) -> BaseModel:
    module = _tool_module("damage")
    return module.building_damage(  # type: ignore[no-any-return]
        session.scene(args.pre),
        session.scene(args.post),
        session.vector(args.footprints),
        out=session.output_path(".geojson"),
        align=args.align,
    )


# -- zonal statistics -----------------------------------------------------------------


def zonal_stats(session: Session, args: ZonalStatsArgs) -> BaseModel:
    module = _tool_module("zonal")
    target, label = _measured_file(session, args.result)
    if args.bbox is not None:
        crs = _bbox_crs(module, args.bbox, args.bbox_crs, target)
        region = module.box_region(args.bbox, crs)
    elif args.region is not None:
        region = _region(session, module, args.region, args.region_classes)
    else:
        raise ArgumentError("Give a region (a handle) or a bbox [west, south, east, north].")
    return module.zonal_stats(target, region, label=label)  # type: ignore[no-any-return]


def _result_file(session: Session, ref: str) -> tuple[Path, str]:
    """The raster (first) or GeoJSON a result wrote, and the result's handle."""
    stored = session.result(ref)
    by_suffix = {Path(f).suffix.lower(): Path(f) for f in stored.files}
    path = by_suffix.get(".tif") or by_suffix.get(".tiff") or by_suffix.get(".geojson")
    if path is None:
        raise ArgumentError(
            f"Result '{stored.handle}' ({stored.tool}) holds no map; give a raster result "
            "(an index, water, flood, burn or change map) or building_damage footprints."
        )
    return path, stored.handle


def _measured_file(session: Session, ref: str) -> tuple[Path, str]:
    try:
        return _result_file(session, ref)
    except ArgumentError as not_result:
        try:
            return session.vector(ref), ref.strip()
        except ArgumentError:
            raise not_result from None


def _region(session: Session, module: Any, ref: str, classes: list[int | str] | None) -> Any:
    """A region from a result (class raster or footprints), a loaded GeoJSON or a scene."""
    try:
        path, handle = _result_file(session, ref)
    except ArgumentError:
        pass
    else:
        if path.suffix.lower() == ".geojson":
            names = [str(c) for c in classes] if classes else None
            return module.polygon_region(path, names, label=handle)
        codes = module.resolve_classes(path, classes, handle) if classes else None
        return module.ClassRegion(path, label=handle, classes=codes)
    try:
        vector = session.vector(ref)
    except ArgumentError:
        pass
    else:
        names = [str(c) for c in classes] if classes else None
        return module.polygon_region(vector, names, label=ref.strip())
    try:
        handle = session.scene_handle(ref)
    except ArgumentError:
        pass
    else:
        grid = session.scene(handle).grid
        if grid.crs is None:
            raise ArgumentError(f"Scene '{handle}' has no CRS, so its extent is no region.")
        return module.box_region(grid.bounds, grid.crs, label=f"the extent of {handle}")
    known = [*session.state.results, *session.state.files]
    raise ArgumentError(
        f"No region '{ref}' in this session (known: {', '.join(known) or 'none'}); name a "
        "class-map result, footprints, a loaded GeoJSON or a scene, or give a bbox."
    )


def _bbox_crs(module: Any, bbox: list[float], crs: str, target: Path) -> Any:
    choice = crs.strip().lower().replace("/", "").replace(" ", "")
    if choice == "auto":
        west, south, east, north = bbox
        fits = all(-180 <= x <= 180 for x in (west, east)) and all(
            -90 <= y <= 90 for y in (south, north)
        )
        choice = "lonlat" if fits else "map"
    if choice in ("lonlat", "wgs84", "latlon", "geographic"):
        return "EPSG:4326"
    if choice == "map":
        return module.native_crs(target)
    return crs.strip()


# -- export ---------------------------------------------------------------------------

_SUFFIX = {"geotiff": ".tif", "geojson": ".geojson", "png": ".png"}


def export(session: Session, args: ExportArgs) -> ExportResult:
    stored = session.result(args.result)
    suffix = _SUFFIX[args.format]
    name = args.filename or f"{stored.handle}{suffix}"
    if not Path(name).suffix:
        name += suffix
    if Path(name).suffix.lower() not in (suffix, ".tiff" if suffix == ".tif" else suffix):
        raise ArgumentError(
            f"File name '{name}' does not match the format {args.format}; end it in {suffix} "
            "or leave the name out."
        )
    dest = session.export_path(name)
    by_suffix = {Path(f).suffix.lower(): Path(f) for f in stored.files}
    raster = by_suffix.get(".tif") or by_suffix.get(".tiff")
    features: int | None = None
    if suffix in by_suffix:
        _copy(by_suffix[suffix], dest)
        if suffix == ".geojson":
            features = _count_features(dest)
    elif raster is None:
        kinds = ", ".join(sorted(by_suffix)) or "no files"
        raise ArgumentError(
            f"Result '{stored.handle}' ({stored.tool}) has {kinds}; it cannot be exported as "
            f"{args.format}. Export a result that has a raster (an index, water, flood or "
            "change map)."
        )
    elif suffix == ".geojson":
        features = _raster_to_geojson(raster, dest)
    else:
        _raster_to_png(raster, dest)
    return ExportResult(
        result=stored.handle,
        format=args.format,
        path=str(dest),
        bytes=dest.stat().st_size,
        features=features,
    )


def _copy(src: Path, dest: Path) -> None:
    from tools.export import atomic_path

    if not src.exists():
        raise ArgumentError(f"The file {src.name} of this result is gone; run the tool again.")
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def _count_features(path: Path) -> int:
    import json

    return len(json.loads(path.read_text()).get("features", []))


def _read_classes(raster: Path) -> tuple[Any, Any]:
    import numpy as np
    import rasterio

    from tools.raster import Grid

    with rasterio.open(raster) as src:
        data = src.read(1)
        nodata = src.nodata
        grid = Grid(src.crs, src.transform, src.width, src.height)
    valid = np.isfinite(data) if data.dtype.kind == "f" else np.ones(data.shape, bool)
    if nodata is not None and not np.isnan(nodata):
        valid &= data != nodata
    return np.where(valid, data, 0), grid


def _raster_to_geojson(raster: Path, dest: Path) -> int:
    import numpy as np

    from tools.export import mask_to_features, write_geojson

    data, grid = _read_classes(raster)
    if data.dtype.kind == "f":
        raise ArgumentError(
            f"{raster.name} holds continuous values (an index), not classes; export it as "
            "geotiff or png, or make a mask first (water_mask, flood_map)."
        )
    values = data.astype(np.int32)
    features = mask_to_features(values > 0, grid, values=values)
    write_geojson(dest, features, {"source": raster.name})
    return len(features)


def _raster_to_png(raster: Path, dest: Path) -> None:
    import numpy as np

    from tools.export import write_quicklook

    data, _ = _read_classes(raster)
    values = data.astype(np.float32)
    finite = values[np.isfinite(values)]
    lo, hi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
    grey = np.clip((values - lo) / max(float(hi - lo), 1e-9), 0, 1)
    write_quicklook(dest, np.repeat(np.nan_to_num(grey)[..., np.newaxis], 3, axis=-1))


# -- domain knowledge -----------------------------------------------------------------


def land_cover(session: Session, args: LandCoverArgs) -> BaseModel:
    module = _tool_module("landcover")
    return module.land_cover(session.scene(args.scene), out=session.output_path(".tif"))  # type: ignore[no-any-return]


def describe_scene(session: Session, args: DescribeSceneArgs) -> BaseModel:
    from agent.settings import Settings

    module = _tool_module("caption")
    scene = session.scene(args.scene)
    settings = Settings()
    if settings.backend == "hf" and settings.hf_model:
        # the configured vision-language model looks at the image too
        return module.describe_with_vlm(scene, _vlm_brain(settings.hf_model, settings))  # type: ignore[no-any-return]
    return module.describe_scene(scene)  # type: ignore[no-any-return]


_VLM_BRAINS: dict[str, Any] = {}


def _vlm_brain(model: str, settings: Any) -> Any:
    """One loaded VLM per model for captions (loading is the expensive part)."""
    if model not in _VLM_BRAINS:
        from agent.brains import make_brain

        _VLM_BRAINS[model] = make_brain(settings)
    return _VLM_BRAINS[model]


def _archive_config() -> Any:
    from agent.settings import Settings
    from tools.archive import ArchiveConfig

    return ArchiveConfig.from_settings(Settings())


def add_to_archive(session: Session, args: AddToArchiveArgs) -> BaseModel:
    paths = [session.scene(handle).source for handle in args.scenes]
    return _tool_module("archive").add_to_archive(paths, archive=_archive_config())  # type: ignore[no-any-return]


def search_archive(session: Session, args: SearchArchiveArgs) -> BaseModel:
    like = args.like
    if like:
        # a loaded scene's handle becomes its path; otherwise an archive id from a search
        with contextlib.suppress(EOError):
            like = session.scene(like).source
    return _tool_module("archive").search_archive(  # type: ignore[no-any-return]
        args.text,
        like,
        archive=_archive_config(),
        date_from=args.date_from,
        date_to=args.date_to,
        bbox=args.bbox,
        sensor=args.sensor,
        max_cloud=args.max_cloud,
        k=args.k,
    )


def classify_scene(session: Session, args: ClassifySceneArgs) -> BaseModel:
    from agent.settings import Settings

    settings = Settings()
    return _tool_module("classify").classify_scene(  # type: ignore[no-any-return]
        session.scene(args.scene),
        args.labels,
        top_k=args.top_k,
        model_path=settings.clip_model_path,
        arch=settings.clip_model_arch,
        device=settings.device,
    )


_AUGMENT_FIELDS = {
    "haze_strength",
    "cloud_cover",
    "sun_azimuth_deg",
    "sun_elevation_deg",
    "snr",
    "scale_factor",
    "max_shift_px",
}


def synthesize_image(session: Session, args: SynthesizeImageArgs) -> BaseModel:
    from agent.settings import Settings

    module = _tool_module("synthesis")
    if args.scene:
        if not args.augmentations:
            raise ArgumentError("Name the augmentations to apply, e.g. ['haze', 'clouds'].")
        params = module.AugmentParams(**args.model_dump(include=_AUGMENT_FIELDS))
        return module.augment_scene(  # type: ignore[no-any-return]
            session.scene(args.scene),
            list(args.augmentations),
            session.output_path(".tif"),
            params=params,
            seed=args.seed,
        )
    if not args.prompt:
        raise ArgumentError("Give a scene handle to augment or a prompt to generate from.")
    settings = Settings()
    return module.text_to_image(  # type: ignore[no-any-return]
        args.prompt,
        session.output_path(".png"),
        model_path=settings.diffusion_model_path,
        steps=settings.diffusion_steps,
        seed=args.seed,
        device=settings.device,
    )


def detect_objects(session: Session, args: DetectObjectsArgs) -> BaseModel:
    out = session.output_path(".geojson")
    if args.result is not None:
        path, handle = _result_file(session, args.result)
        return _tool_module("objects").objects_in_result(  # type: ignore[no-any-return]
            path,
            args.classes,
            label=handle,
            min_area_ha=args.min_area_ha,
            max_area_ha=args.max_area_ha,
            out=out,
        )
    assert args.scene is not None and args.classes  # the Args validator guarantees both
    return _tool_module("detection").detect_objects(  # type: ignore[no-any-return]
        session.scene(args.scene), args.classes, score_threshold=args.score_threshold, out=out
    )


def ground(session: Session, args: GroundArgs) -> BaseModel:
    return _tool_module("detection").ground(  # type: ignore[no-any-return]
        session.scene(args.scene), args.expression, out=session.output_path(".geojson")
    )


def segment(session: Session, args: SegmentArgs) -> BaseModel:
    scene_ref = args.scene
    grounded: dict[str, Any] | None = None
    if args.ground_result is not None:
        stored = session.result(args.ground_result)
        if stored.tool != "ground":
            raise ArgumentError(
                f"'{stored.handle}' is a {stored.tool} result, not a ground result; give a "
                "point or a box, or ground the object first."
            )
        grounded = stored.data
        ground_scene = session.scene_handle(str(stored.args.get("scene", "")))
        if scene_ref is not None and session.scene_handle(scene_ref) != ground_scene:
            raise ArgumentError(
                f"'{stored.handle}' was found on scene '{ground_scene}', not '{scene_ref}'; "
                "segment on the scene it was grounded on."
            )
        scene_ref = ground_scene
    assert scene_ref is not None  # the Args validator guarantees a scene or a ground result
    return _tool_module("segmentation").segment(  # type: ignore[no-any-return]
        session.scene(scene_ref),
        point=args.point,
        box=args.box,
        ground_result=grounded,
        coords=args.coords,
        out=session.output_path(".tif"),
    )


def domain_lookup(session: Session, args: DomainLookupArgs) -> LookupResult:
    if args.kind in ("auto", "sensor"):
        sensor = _find_sensor(args.topic)
        if sensor is not None:
            return sensor
        if args.kind == "sensor":
            from tools.sensors import SENSORS

            raise ArgumentError(
                f"Unknown sensor '{args.topic}'; known sensors: {', '.join(SENSORS)}."
            )
    spectral = _tool_module("spectral")
    info = spectral.index_info(args.topic)
    return LookupResult(kind="index", name=info["index"], data=info)


def _find_sensor(topic: str) -> LookupResult | None:
    from tools.sensors import SENSORS

    token = "".join(ch for ch in topic.lower() if ch.isalnum())
    for spec in SENSORS.values():
        names = {spec.key, spec.title, *spec.aliases}
        if any(token == "".join(ch for ch in n.lower() if ch.isalnum()) for n in names) or (
            len(token) >= 6 and token in "".join(ch for ch in spec.title.lower() if ch.isalnum())
        ):
            return LookupResult(
                kind="sensor",
                name=spec.key,
                data={
                    "title": spec.title,
                    "units": spec.units,
                    "scale": spec.scale,
                    "offset": spec.offset,
                    "notes": spec.notes,
                    "bands": [
                        {
                            "band_id": b.band_id,
                            "name": b.name,
                            "wavelength_nm": b.wavelength_nm,
                            "resolution_m": b.resolution_m,
                        }
                        for b in spec.bands
                    ],
                },
            )
    return None
