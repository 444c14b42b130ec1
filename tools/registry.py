"""The tool registry: what the brain may call, described as data.

Each entry is a `ToolSpec`: a stable name from the catalogue, a paragraph written for a
model, a pydantic model of the arguments (scenes and earlier results are named by
handles such as "post" or "flood_1", never by paths), where the result model lives, and
the plain function `(session, args) -> result` that runs it.

Entries are static: importing this module renders and checks every schema (so a broken
one fails at import, not in front of a user) but imports no tool module, no raster
library and no model weights. The tool functions import their heavy modules on first
call, so a tool module that is absent or broken only disables its own tool.
"""

from __future__ import annotations

import importlib
import json
import keyword
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tools import bindings

if TYPE_CHECKING:
    from agent.session import Session

ToolFunction = Callable[["Session", Any], BaseModel]

_NAME = re.compile(r"^[a-z][a-z0-9_]{1,63}$")


class RegistryError(ValueError):
    """A tool entry is malformed (raised when the registry is built, i.e. at import)."""


class ToolArgs(BaseModel):
    """Base of every tool's arguments: unknown fields are an error the model sees."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _as_list(value: Any) -> Any:
    # Models often pass one handle where a list is expected: "post" -> ["post"].
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# -- arguments ------------------------------------------------------------------------

SCENE_HELP = "Handle of a loaded scene, e.g. 'post' or 'pre' (not a file path)."


class SceneInfoArgs(ToolArgs):
    scene: str = Field(description=SCENE_HELP)


class SpectralIndexArgs(ToolArgs):
    scene: str = Field(description=SCENE_HELP)
    index: str = Field(
        description="Index short name from the spyndex catalogue, case-insensitive: "
        "NDVI, NDWI, MNDWI, NBR, EVI, SAVI, NDBI, ..."
    )
    constants: dict[str, float] | None = Field(
        default=None,
        description='Optional values for the index\'s constants, e.g. {"L": 0.5} for SAVI; '
        "catalogue defaults otherwise.",
    )


WaterMethod = Literal["auto", "optical", "sar", "fusion"]


class WaterMaskArgs(ToolArgs):
    scenes: list[str] = Field(
        min_length=1,
        max_length=2,
        description="Handles of one date's scenes: an optical one, a SAR one, or both "
        "(fused), e.g. ['post'] or ['post', 'post_sar'].",
    )
    method: WaterMethod = Field(
        default="auto",
        description="optical (MNDWI/NDWI), sar (VV/VH backscatter), fusion, or auto "
        "(whatever the scenes allow).",
    )

    _lists = field_validator("scenes", mode="before")(_as_list)


class FloodMapArgs(ToolArgs):
    post: list[str] = Field(
        min_length=1,
        max_length=2,
        description="Handles of the post-event scenes (optical and/or SAR of one date).",
    )
    pre: list[str] | None = Field(
        default=None,
        max_length=2,
        description="Handles of the pre-event scenes; without them all post water counts "
        "as flooded and permanent water cannot be separated.",
    )
    align: bool = Field(default=False, description="Resample pre onto post's grid if they differ.")
    method: WaterMethod = Field(
        default="auto", description="Water evidence to use, as in water_mask."
    )

    _lists = field_validator("post", "pre", mode="before")(_as_list)


class PairArgs(ToolArgs):
    pre: str = Field(description="Handle of the scene before the event, e.g. 'pre'.")
    post: str = Field(description="Handle of the scene after the event, e.g. 'post'.")
    align: bool = Field(default=False, description="Resample pre onto post's grid if they differ.")


class BurnSeverityArgs(PairArgs):
    pass


class VegetationChangeArgs(PairArgs):
    threshold: float | None = Field(
        default=None,
        gt=0,
        le=2,
        description="|dNDVI| above which a pixel counts as changed; adaptive (Otsu, at "
        "least 0.1) when omitted.",
    )


class ChangeDetectionArgs(PairArgs):
    method: Literal["auto", "structural", "cva"] = Field(
        default="auto",
        description="structural (robust to illumination, the auto choice) or cva "
        "(plain change vector analysis).",
    )


class BuildingDamageArgs(PairArgs):
    footprints: str = Field(
        description="Handle of loaded building footprints (GeoJSON), or a GeoJSON file "
        "in the session's workspace."
    )


class ExportArgs(ToolArgs):
    result: str = Field(description="Handle of an earlier result, e.g. 'flood_1' or 'ndvi_2'.")
    format: Literal["geotiff", "geojson", "png"] = Field(
        description="geotiff (the raster), geojson (polygons of the classes, EPSG:4326) "
        "or png (a quicklook image)."
    )
    filename: str | None = Field(
        default=None,
        description="Optional file name inside the session's exports folder; a name "
        "from the handle otherwise.",
    )

    @field_validator("format", mode="before")
    @classmethod
    def _format_alias(cls, value: Any) -> Any:
        aliases = {
            "tif": "geotiff",
            "tiff": "geotiff",
            "cog": "geotiff",
            "json": "geojson",
            "vector": "geojson",
            "image": "png",
            "quicklook": "png",
        }
        if isinstance(value, str):
            value = value.strip().lower().lstrip(".")
            return aliases.get(value, value)
        return value


class ZonalStatsArgs(ToolArgs):
    result: str = Field(
        description="Handle of the result to measure: a raster (an index such as 'ndvi_1', "
        "a water, flood, burn or change map) or scored footprints ('damage_1')."
    )
    region: str | None = Field(
        default=None,
        description="The region as a handle: a class-map result (inside = its classes of "
        "interest, e.g. the flood water of 'flood_1'), scored footprints, a loaded GeoJSON "
        "of polygons, or a loaded scene (its extent). Give region or bbox.",
    )
    region_classes: list[int | str] | None = Field(
        default=None,
        description="Classes of the region that count as inside, by code or name, e.g. "
        "['flood'], [4, 5, 6, 7] or ['destroyed']; its classes of interest when omitted.",
    )
    bbox: list[float] | None = Field(
        default=None,
        min_length=4,
        max_length=4,
        description="A box [west, south, east, north] as the region, instead of a handle.",
    )
    bbox_crs: str = Field(
        default="auto",
        description="Coordinates of bbox: 'lonlat' (EPSG:4326), 'map' (the result's own "
        "CRS), an EPSG code such as 'EPSG:32630', or 'auto' (lon/lat when the numbers fit).",
    )

    @field_validator("region_classes", mode="before")
    @classmethod
    def _classes_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else _as_list(value)

    @field_validator("bbox", mode="before")
    @classmethod
    def _bbox_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # "w, s, e, n" or "[w s e n]"
            return [part for part in re.split(r"[\s,;\[\]()]+", value) if part]
        return value

    @model_validator(mode="after")
    def _one_region(self) -> ZonalStatsArgs:
        if (self.region is None) == (self.bbox is None):
            raise ValueError("give either 'region' (a handle) or 'bbox' (4 numbers), not both")
        return self


class DomainLookupArgs(ToolArgs):
    topic: str = Field(
        min_length=1,
        description="A spectral index short name (NDVI, NBR, MNDWI...) or a sensor "
        "(sentinel2_l2a, Landsat 8, Sentinel-1...).",
    )
    kind: Literal["auto", "index", "sensor"] = Field(
        default="auto", description="What the topic is; auto tries an index, then a sensor."
    )


class LandCoverArgs(ToolArgs):
    scene: str = Field(description=SCENE_HELP)


class DescribeSceneArgs(ToolArgs):
    scene: str = Field(description=SCENE_HELP)


class AddToArchiveArgs(ToolArgs):
    scenes: list[str] = Field(min_length=1, description="Handles of loaded scenes to index.")

    @field_validator("scenes", mode="before")
    @classmethod
    def _scenes_list(cls, value: Any) -> Any:
        return _as_list(value)


class SearchArchiveArgs(ToolArgs):
    text: str | None = Field(
        default=None, description="What to look for, in words, e.g. 'flooded farmland'."
    )
    like: str | None = Field(
        default=None,
        description="Handle of a loaded scene, or an archive id from an earlier search, to "
        "find similar scenes.",
    )
    date_from: str | None = Field(default=None, description="Earliest date, YYYY-MM-DD.")
    date_to: str | None = Field(default=None, description="Latest date, YYYY-MM-DD.")
    bbox: list[float] | None = Field(
        default=None,
        min_length=4,
        max_length=4,
        description="[min_lon, min_lat, max_lon, max_lat] in degrees; scenes intersecting it.",
    )
    sensor: str | None = Field(default=None, description="sentinel-2, sentinel-1, landsat or rgb.")
    max_cloud: float | None = Field(
        default=None, ge=0, le=1, description="Largest cloud share (0-1)."
    )
    k: int = Field(default=5, ge=1, le=50, description="How many scenes to return.")


class ClassifySceneArgs(ToolArgs):
    scene: str = Field(description=SCENE_HELP)
    labels: list[str] | None = Field(
        default=None,
        description="Candidate scene labels, e.g. ['flooded farmland', 'forest', 'town']; "
        "leave out for 50 standard remote-sensing scene classes (RESISC45/AID).",
    )
    top_k: int = Field(default=5, ge=1, le=50, description="How many labels to return.")

    _lists = field_validator("labels", mode="before")(_as_list)


SynthesisKind = Literal["haze", "clouds", "noise", "scale", "misregistration"]


class SynthesizeImageArgs(ToolArgs):
    scene: str | None = Field(
        default=None,
        description="Handle of a scene to augment. Leave out to generate an image from prompt.",
    )
    augmentations: list[SynthesisKind] = Field(
        default_factory=list,
        description="Effects to simulate on the scene: haze, clouds (with shadows), noise "
        "(sensor noise), scale (coarser pixels), misregistration (bands shifted).",
    )
    prompt: str | None = Field(
        default=None, description="Text for text-to-image generation, e.g. 'a flooded town'."
    )
    haze_strength: float = Field(default=0.5, ge=0, le=1, description="0 clear to 1 thick haze.")
    cloud_cover: float = Field(default=0.3, ge=0, le=1, description="Fraction covered by cloud.")
    sun_azimuth_deg: float = Field(
        default=150, ge=0, lt=360, description="Sun azimuth; sets the shadow direction."
    )
    sun_elevation_deg: float = Field(
        default=45, gt=0, le=90, description="Sun elevation; sets the shadow length."
    )
    snr: float = Field(
        default=100, gt=0, le=10000, description="Signal-to-noise ratio at 10% reflectance."
    )
    scale_factor: float = Field(default=2, ge=1, le=64, description="New pixel size / old, e.g. 2.")
    max_shift_px: float = Field(default=0.5, ge=0, le=10, description="Largest band shift, pixels.")
    seed: int = Field(default=0, ge=0, description="Same seed, same result.")

    _lists = field_validator("augmentations", mode="before")(_as_list)


class DetectObjectsArgs(ToolArgs):
    # JSON Schema's dependentRequired, read by the local brain's call decoder: a call
    # with a scene is not closed before it names the classes (the validator says why)
    model_config = ConfigDict(json_schema_extra={"dependentRequired": {"scene": ["classes"]}})

    scene: str | None = Field(
        default=None,
        description="Handle of a loaded image to search with the open-vocabulary detector "
        "(needs detector weights), e.g. 'post'. Give scene or result, not both.",
    )
    result: str | None = Field(
        default=None,
        description="Handle of a mapped result whose regions are the objects (works without "
        "weights): water bodies in 'water_1', flooded areas in 'flood_1', burn scars in "
        "'burn_1', changed parcels in 'change_1', damaged buildings in 'damage_1'.",
    )
    classes: list[str] | None = Field(
        default=None,
        description="With scene: what to look for, in words, e.g. ['ship', 'storage tank']. "
        "With result: which of its classes count, by name or code, e.g. ['flood'] or "
        "['destroyed']; its classes of interest when omitted.",
    )
    min_area_ha: float | None = Field(
        default=None,
        ge=0,
        description="With result: keep objects of at least this many hectares, e.g. 1 for "
        "'larger than 1 ha'.",
    )
    max_area_ha: float | None = Field(
        default=None, gt=0, description="With result: keep objects of at most this many hectares."
    )
    score_threshold: float = Field(
        default=0.2, ge=0, le=1, description="With scene: lowest detector confidence kept (0-1)."
    )

    _lists = field_validator("classes", mode="before")(_as_list)

    @model_validator(mode="after")
    def _scene_or_result(self) -> DetectObjectsArgs:
        if (self.scene is None) == (self.result is None):
            raise ValueError("give either 'scene' (an image handle) or 'result' (a map handle)")
        if self.scene is not None and not self.classes:
            raise ValueError("with 'scene', name the 'classes' to look for, e.g. ['ship']")
        return self


class GroundArgs(ToolArgs):
    scene: str = Field(description=SCENE_HELP)
    expression: str = Field(
        min_length=1,
        description="The object in the user's words, e.g. 'the golf course in the north' or "
        "'the large white building next to the river'.",
    )


class SegmentArgs(ToolArgs):
    model_config = ConfigDict(
        json_schema_extra={"dependentRequired": {"point": ["scene"], "box": ["scene"]}}
    )

    scene: str | None = Field(
        default=None,
        description=SCENE_HELP + " May be left out with ground_result (its scene is used).",
    )
    point: list[float] | None = Field(
        default=None, min_length=2, max_length=2, description="A point on the object: [x, y]."
    )
    box: list[float] | None = Field(
        default=None,
        min_length=4,
        max_length=4,
        description="A box around the object: [x1, y1, x2, y2] (top-left, bottom-right).",
    )
    ground_result: str | None = Field(
        default=None,
        description="Handle of a ground result, e.g. 'ground_1': its box is the prompt.",
    )
    coords: Literal["pixel", "lonlat", "map"] = Field(
        default="pixel",
        description="Units of point and box: pixel (column, row from the top-left corner), "
        "lonlat (degrees, lon first) or map (the scene's own CRS).",
    )

    @model_validator(mode="after")
    def _one_prompt(self) -> SegmentArgs:
        given = [n for n in ("point", "box", "ground_result") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'point', 'box' or 'ground_result'")
        if self.scene is None and self.ground_result is None:
            raise ValueError("give the 'scene' the point or box lies on")
        return self


# -- the registry ---------------------------------------------------------------------


@dataclass(frozen=True)
class ToolSpec:
    """One tool as the brain sees it, and how to run it."""

    name: str
    description: str
    args_model: type[ToolArgs]
    result_ref: str  # "module:Class", imported on demand
    function: ToolFunction
    handle_prefix: str | Callable[[Any], str]

    def result_model(self) -> type[BaseModel]:
        module, _, attr = self.result_ref.partition(":")
        model = getattr(importlib.import_module(module), attr)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise RegistryError(f"{self.result_ref} is not a pydantic model")
        return model

    def prefix_for(self, args: BaseModel) -> str:
        prefix = self.handle_prefix(args) if callable(self.handle_prefix) else self.handle_prefix
        cleaned = re.sub(r"[^a-z0-9_]", "_", prefix.lower()).strip("_") or self.name
        return cleaned if cleaned[0].isalpha() else f"r_{cleaned}"

    def parameters_schema(self) -> dict[str, Any]:
        """JSON schema of the arguments with references inlined and titles dropped:
        what an OpenAI-style `parameters` object or a text prompt shows the model."""
        schema = self.args_model.model_json_schema()
        defs = schema.pop("$defs", {})
        return _clean(_inline(schema, defs))


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.split("/")[-1]], defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _clean(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _clean(v) for k, v in node.items() if k != "title"}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


class Registry:
    """Tool specs by name, checked as they are added."""

    def __init__(self) -> None:
        self._specs: dict[str, ToolSpec] = {}

    def register(self, spec: ToolSpec) -> ToolSpec:
        _check(spec)
        if spec.name in self._specs:
            raise RegistryError(f"tool '{spec.name}' is registered twice")
        self._specs[spec.name] = spec
        return spec

    def __getitem__(self, name: str) -> ToolSpec:
        return self._specs[name]

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[ToolSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    @property
    def names(self) -> list[str]:
        return list(self._specs)

    def subset(self, names: list[str]) -> Registry:
        sub = Registry()
        for name in names:
            sub._specs[name] = self._specs[name]
        return sub


def _check(spec: ToolSpec) -> None:
    where = f"tool '{spec.name}'"
    if not _NAME.match(spec.name) or keyword.iskeyword(spec.name):
        raise RegistryError(f"{where}: name must be lower_snake_case, 2-64 characters")
    if len(spec.description.split()) < 12:
        raise RegistryError(f"{where}: the description must be a paragraph a model can act on")
    if not (isinstance(spec.args_model, type) and issubclass(spec.args_model, ToolArgs)):
        raise RegistryError(f"{where}: args_model must subclass ToolArgs")
    for field_name, info in spec.args_model.model_fields.items():
        if not info.description:
            raise RegistryError(f"{where}: argument '{field_name}' has no description")
    if ":" not in spec.result_ref:
        raise RegistryError(f"{where}: result_ref must read 'module:Class'")
    if not callable(spec.function):
        raise RegistryError(f"{where}: function is not callable")
    if isinstance(spec.handle_prefix, str) and not _NAME.match(spec.handle_prefix):
        raise RegistryError(
            f"{where}: handle prefix '{spec.handle_prefix}' is not lower_snake_case"
        )
    try:
        json.dumps(spec.parameters_schema())
    except Exception as exc:  # a field type pydantic cannot render, or a non-JSON default
        raise RegistryError(f"{where}: the argument schema does not render: {exc}") from exc


def _build() -> Registry:
    registry = Registry()
    for spec in (
        ToolSpec(
            "scene_info",
            "Describe a loaded scene: sensor, named bands with their units, size in pixels, "
            "CRS, pixel size, bounds (also in lon/lat) and acquisition date. Call it first "
            "when you do not know what a scene contains or which tools it supports.",
            SceneInfoArgs,
            "tools.bindings:SceneInfoResult",
            bindings.scene_info,
            "info",
        ),
        ToolSpec(
            "spectral_index",
            "Compute a spectral index from the spyndex catalogue (NDVI, NDWI, MNDWI, NBR, "
            "EVI, SAVI, NDBI and ~280 more) on a loaded scene. Returns the index's full name "
            "and formula, which band fed each term, mean, min, max, std and percentiles of "
            "the valid pixels, and a raster result you can export.",
            SpectralIndexArgs,
            "tools.spectral:IndexResult",
            bindings.spectral_index,
            lambda a: a.index,
        ),
        ToolSpec(
            "water_mask",
            "Map surface water on one date from an optical scene (MNDWI/NDWI with adaptive "
            "Otsu thresholds), a SAR scene (low VV/VH backscatter) or both fused. Returns the "
            "water fraction and area in hectares and a mask result you can export.",
            WaterMaskArgs,
            "tools.water:WaterResult",
            bindings.water_mask,
            "water",
        ),
        ToolSpec(
            "flood_map",
            "Map flood water: water on the post-event scenes, and with pre-event scenes the "
            "new (flooded) water apart from permanent water. Returns the flooded area and "
            "permanent water in hectares, the water fraction, and a map you can export.",
            FloodMapArgs,
            "tools.water:FloodResult",
            bindings.flood_map,
            "flood",
        ),
        ToolSpec(
            "burn_severity",
            "Burn severity between a pre-fire and a post-fire scene from the differenced "
            "Normalized Burn Ratio (dNBR) with the USGS severity classes. Needs NIR and "
            "SWIR2 bands. Returns the area and share of each class and the burned area.",
            BurnSeverityArgs,
            "tools.change:BurnResult",
            bindings.burn_severity,
            "burn",
        ),
        ToolSpec(
            "vegetation_change",
            "Vegetation loss and gain between two dates from the NDVI difference (dNDVI) "
            "with an adaptive threshold. Needs red and NIR bands. Returns loss and gain "
            "areas in hectares and fractions, and a class map you can export.",
            VegetationChangeArgs,
            "tools.change:VegetationChangeResult",
            bindings.vegetation_change,
            "vegchange",
        ),
        ToolSpec(
            "change_detection",
            "Generic change between two co-registered scenes of any kind (RGB aerial photos "
            "or multispectral): a change score per pixel thresholded adaptively. Returns the "
            "changed area and fraction and a change map you can export.",
            ChangeDetectionArgs,
            "tools.change:ChangeResult",
            bindings.change_detection,
            "change",
        ),
        ToolSpec(
            "building_damage",
            "Score the damage of every building footprint from a pixel-aligned pre/post "
            "image pair, with the xView2 classes (no-damage, minor, major, destroyed). "
            "Returns counts and areas per class and a GeoJSON of scored footprints.",
            BuildingDamageArgs,
            "tools.damage:DamageResult",
            bindings.building_damage,
            "damage",
        ),
        ToolSpec(
            "zonal_stats",
            "Statistics of a result inside a region: mean, min, max, std and area of an index "
            "raster; the area of each class of a class map (water, flood, burn severity, "
            "change); or, for scored building footprints, how many per damage class intersect "
            "the region. The region is another result's classes (e.g. the flood water of "
            "'flood_1'), a loaded polygon GeoJSON, a scene's extent, or a lon/lat or map box.",
            ZonalStatsArgs,
            "tools.zonal:ZonalResult",
            bindings.zonal_stats,
            "zonal",
        ),
        ToolSpec(
            "export",
            "Write an earlier result (by its handle, e.g. 'flood_1') as a GeoTIFF raster, a "
            "GeoJSON of polygons in EPSG:4326, or a PNG quicklook, inside the session's "
            "exports folder. Returns the path of the file written.",
            ExportArgs,
            "tools.bindings:ExportResult",
            bindings.export,
            "export",
        ),
        ToolSpec(
            "land_cover",
            "Classify every pixel of a multispectral scene (needs green, red, NIR, SWIR1) into "
            "water, dense and sparse vegetation, built-up, bare soil, burned, snow and cloud "
            "with adaptive thresholds. Returns each class's area in hectares and share, and a "
            "class map you can export. Refuses RGB photos and SAR.",
            LandCoverArgs,
            "tools.landcover:LandCoverResult",
            bindings.land_cover,
            "landcover",
        ),
        ToolSpec(
            "describe_scene",
            "Caption a scene from measured content: sensor, date, location, land-cover shares, "
            "water and notable features. Works on multispectral, SAR and RGB scenes.",
            DescribeSceneArgs,
            "tools.caption:CaptionResult",
            bindings.describe_scene,
            "caption",
        ),
        ToolSpec(
            "add_to_archive",
            "Index loaded scenes in the scene archive (caption, land cover, bounds, date, "
            "sensor). Re-adding a scene does nothing; unreadable scenes are reported.",
            AddToArchiveArgs,
            "tools.archive:AddResult",
            bindings.add_to_archive,
            "archived",
        ),
        ToolSpec(
            "search_archive",
            "Find archived scenes by a text description, by similarity to a scene, and/or by "
            "date range, bounding box, sensor and cloud share. Returns ranked scenes with "
            "captions and paths.",
            SearchArchiveArgs,
            "tools.archive:SearchResult",
            bindings.search_archive,
            "search",
        ),
        ToolSpec(
            "classify_scene",
            "Label a whole scene with scene classes (e.g. desert, farmland, dense residential, "
            "flooded area), zero-shot with a CLIP remote-sensing model when its weights are "
            "set; otherwise from the measured land cover (coarser, multispectral scenes only). "
            "Returns the top labels with probabilities and which method answered.",
            ClassifySceneArgs,
            "tools.classify:ClassifyResult",
            bindings.classify_scene,
            "labels",
        ),
        ToolSpec(
            "synthesize_image",
            "Make a synthetic image: augment a loaded scene with physically modelled haze, "
            "clouds and their shadows, sensor noise, coarser pixels or band misregistration "
            "(keeps its CRS and bands; writes a GeoTIFF), or generate an image from a text "
            "prompt with a diffusion model when one is configured. Results are marked synthetic.",
            SynthesizeImageArgs,
            "tools.synthesis:SynthesisResult",
            bindings.synthesize_image,
            lambda a: "augmented" if a.scene else "generated",
        ),
        ToolSpec(
            "detect_objects",
            "Find and count objects. With a scene and classes in words (e.g. ['ship', "
            "'storage tank']) an open-vocabulary detector returns boxes with scores, in pixels "
            "and lon/lat, when detector weights are set. With a result handle instead (e.g. "
            "'flood_1', 'water_1', 'burn_1', 'damage_1') it works offline: each connected "
            "region (water body, flooded field, burn scar) or damaged building is an object, "
            "filtered by min_area_ha/max_area_ha; returns counts, areas in hectares and "
            "centroids in lon/lat, and a GeoJSON you can export.",
            DetectObjectsArgs,
            "tools.detection:DetectionResult",  # with `result`: tools.objects:ObjectsResult
            bindings.detect_objects,
            "objects",
        ),
        ToolSpec(
            "ground",
            "Locate the one object a phrase describes ('the golf course in the north', 'the "
            "ship nearest the pier') in a scene with a grounding model. Returns its box in "
            "pixels, map and lon/lat coordinates with a score and whether it is confident; "
            "pass the result to segment for the object's outline. Needs grounding or detector "
            "weights.",
            GroundArgs,
            "tools.detection:GroundResult",
            bindings.ground,
            "ground",
        ),
        ToolSpec(
            "segment",
            "Outline one object with SAM from a prompt: a point on it, a box around it, or a "
            "ground result's box. Returns its area in hectares, its pixel bounds, and a mask "
            "raster with GeoJSON polygons you can export or use as a region in zonal_stats. "
            "Needs SAM weights.",
            SegmentArgs,
            "tools.segmentation:SegmentResult",
            bindings.segment,
            "segment",
        ),
        ToolSpec(
            "domain_lookup",
            "Look up domain knowledge from data rather than memory: a spectral index's full "
            "name, formula, bands, application domain and reference, or a sensor's bands "
            "with wavelengths and resolutions. Use it before explaining an index or sensor.",
            DomainLookupArgs,
            "tools.bindings:LookupResult",
            bindings.domain_lookup,
            "lookup",
        ),
    ):
        registry.register(spec)
    return registry


REGISTRY = _build()


def get_registry() -> Registry:
    """The process-wide registry of the tools the agent may call."""
    return REGISTRY
