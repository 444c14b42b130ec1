"""Archive benchmark: Chroma HNSW on 100k MiniLM caption embeddings, and text queries over
an archive of every scene in ../shared/data.

Part 1 (scale). Captions are generated from the same phrase builder the offline captions
use, varying sensor, place, date, event and land-cover shares, and embedded with the
bundled MiniLM. Encoding runs at ~17-40 captions/s on the shared 2-core machine, so
100k real encodings would take over an hour: `--unique` captions (default 3000) are
really encoded and the rest of the 100k are built from them by small perturbations
(v = normalise(e_i + t (e_j - e_i) + noise), t ~ U(0, 0.3), noise sd 0.01 per component),
which keeps the neighbourhood structure of real caption embeddings (clusters of near
duplicates, a few hundred distinct themes) rather than uniform random vectors. Then for a
few HNSW settings: indexing throughput, single-query latency p50/p95, and recall@10
against exact cosine search (numpy), on held-out queries made the same way.

Part 2 (queries). Every scene under ../shared/data is added to a fresh archive; ten text
queries are run and the rank of the scene each is expected to find is reported.

    .venv/bin/python bench/archive_bench.py [--out bench/archive_bench.json] [--n 100000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tools.archive import HNSW, chroma_client, embed_texts, scene_collection  # noqa: E402
from tools.caption import _land_phrases  # noqa: E402

DATA = Path(os.environ.get("EOAGENT_SAMPLE_DATA", REPO.parent / "shared" / "data"))

SENSORS = [
    "Sentinel-2 MSI Level-2A (surface reflectance)",
    "Sentinel-2 MSI Level-1C (top-of-atmosphere)",
    "Landsat 8 OLI",
    "Landsat 9 OLI-2",
    "Landsat 7 ETM+",
    "Sentinel-1 C-band SAR GRD",
    "RGB (aerial or visible-only imagery)",
]
PLACES = [
    ("Valencia, Spain", 39.47, -0.38), ("Murcia, Spain", 37.98, -1.13),
    ("Porto Alegre, Brazil", -30.03, -51.23), ("Dhaka, Bangladesh", 23.81, 90.41),
    ("Houston, Texas", 29.76, -95.37), ("Joplin, Missouri", 37.08, -94.51),
    ("Raleigh, North Carolina", 35.78, -78.64), ("Patagonia, Argentina", -47.8, -67.6),
    ("Atacama, Chile", -24.5, -69.25), ("Sahel, Niger", 14.0, 2.0),
    ("Nile Delta, Egypt", 30.9, 31.2), ("Po Valley, Italy", 45.0, 10.5),
    ("Paris, France", 48.86, 2.35), ("Lagos, Nigeria", 6.52, 3.38),
    ("Jakarta, Indonesia", -6.2, 106.85), ("Mekong Delta, Vietnam", 10.0, 105.8),
    ("Alberta, Canada", 53.9, -116.6), ("Siberia, Russia", 61.0, 99.0),
    ("Amazonas, Brazil", -3.4, -62.2), ("Borneo, Malaysia", 1.5, 113.9),
    ("California, USA", 36.8, -119.4), ("Attica, Greece", 38.0, 23.7),
    ("Queensland, Australia", -20.9, 142.7), ("Punjab, Pakistan", 31.1, 72.7),
    ("Lisbon, Portugal", 38.72, -9.14), ("Bavaria, Germany", 48.8, 11.5),
    ("Nairobi, Kenya", -1.29, 36.82), ("Sichuan, China", 30.6, 102.7),
    ("Hokkaido, Japan", 43.06, 141.35), ("Kathmandu, Nepal", 27.7, 85.3),
]  # fmt: skip
EVENTS = [
    "", "", "", "after a river flood", "during a flash flood", "after a wildfire",
    "after a tornado", "after an earthquake", "during a drought", "after a hurricane",
    "after a landslide", "during the growing season", "in winter",
]  # fmt: skip
CLASSES = [
    "water", "dense vegetation", "sparse vegetation", "built-up", "bare soil",
    "burned", "snow", "cloud",
]  # fmt: skip
# Dirichlet concentrations per landscape type, so shares look like real scenes.
LANDSCAPES = [
    [0.3, 3, 2, 0.5, 1, 0.05, 0.05, 0.3],  # farmland
    [0.2, 6, 1, 0.2, 0.3, 0.05, 0.05, 0.3],  # forest
    [0.1, 0.2, 0.8, 0.3, 6, 0.05, 0.05, 0.1],  # desert
    [0.5, 0.8, 1.5, 5, 0.8, 0.05, 0.05, 0.2],  # city
    [4, 1, 1, 0.5, 0.5, 0.05, 0.05, 0.3],  # flood / coast
    [0.2, 1, 1, 0.3, 1, 3, 0.05, 0.1],  # burn
    [0.3, 1, 0.5, 0.2, 0.5, 0.05, 4, 0.5],  # snow
]


def caption(rng: random.Random, nprng: np.random.Generator) -> str:
    sensor = rng.choice(SENSORS)
    place, lat, lon = rng.choice(PLACES)
    lat += rng.uniform(-0.5, 0.5)
    lon += rng.uniform(-0.5, 0.5)
    date = f"{rng.randint(2015, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    event = rng.choice(EVENTS)
    shares = dict(zip(CLASSES, nprng.dirichlet(rng.choice(LANDSCAPES)), strict=True))
    cover, features = _land_phrases(shares)
    ns, ew = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
    text = (
        f"{sensor} image centred near {abs(lat):.2f}°{ns}, {abs(lon):.2f}°{ew}, acquired "
        f"{date}. Land cover: {cover}."
    )
    if features:
        text += " " + "; ".join(features).capitalize() + "."
    return text + f" Source: {place}{' ' + event if event else ''}."


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def perturb(base: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    i = rng.integers(0, len(base), n)
    j = rng.integers(0, len(base), n)
    t = rng.uniform(0, 0.3, (n, 1)).astype(np.float32)
    noise = rng.normal(0, 0.01, (n, base.shape[1])).astype(np.float32)
    return unit(base[i] + t * (base[j] - base[i]) + noise)


def embed_unique(n_unique: int, budget_s: float, seed: int) -> tuple[np.ndarray, dict]:
    rng, nprng = random.Random(seed), np.random.default_rng(seed)
    texts = list(dict.fromkeys(caption(rng, nprng) for _ in range(n_unique)))
    embed_texts(["warm up"])
    vectors, start = [], time.perf_counter()
    for i in range(0, len(texts), 256):
        vectors.append(embed_texts(texts[i : i + 256], batch_size=128))
        if time.perf_counter() - start > budget_s:
            break
    seconds = time.perf_counter() - start
    base = np.concatenate(vectors)
    return base, {
        "unique_captions_embedded": len(base),
        "embed_seconds": round(seconds, 1),
        "captions_per_s": round(len(base) / seconds, 1),
        "example_captions": texts[:3],
    }


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3)


def run_setting(
    client,
    name: str,
    vectors: np.ndarray,
    queries: np.ndarray,
    exact: np.ndarray,
    hnsw: dict,
    ef_searches: list[int],
) -> list[dict]:
    with contextlib.suppress(Exception):  # absent collection
        client.delete_collection(name)
    collection = scene_collection(client, name, hnsw)
    ids = [f"v{i}" for i in range(len(vectors))]
    batch = min(5000, client.get_max_batch_size())
    start = time.perf_counter()
    for i in range(0, len(vectors), batch):
        collection.add(ids=ids[i : i + batch], embeddings=vectors[i : i + batch])
    add_s = time.perf_counter() - start
    rows = []
    for ef in ef_searches:
        collection.modify(configuration={"hnsw": {"ef_search": ef}})
        latencies, recalls = [], []
        for q, truth in zip(queries, exact, strict=True):
            t0 = time.perf_counter()
            got = collection.query(query_embeddings=[q], n_results=10, include=[])
            latencies.append(1000 * (time.perf_counter() - t0))
            found = {int(x[1:]) for x in got["ids"][0]}
            recalls.append(len(found & set(truth.tolist())) / 10)
        rows.append(
            {
                "max_neighbors": hnsw["max_neighbors"],
                "ef_construction": hnsw["ef_construction"],
                "ef_search": ef,
                "add_vectors_per_s": round(len(vectors) / add_s, 1),
                "query_ms_p50": percentile(latencies, 50),
                "query_ms_p95": percentile(latencies, 95),
                "recall_at_10": round(float(np.mean(recalls)), 4),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    client.delete_collection(name)
    return rows


QUERIES = [
    ("flooded farmland", "sentinel2/spain_flood_2019_s2_l1c.tif"),
    ("arid land", "sentinel2/patagonia_bands"),
    ("city after a disaster", "disaster/joplin_tornado_2011/post_aerial_tile_31500-5137.tif"),
    ("radar image of a flood", "sar/spain_flood_2019_s1.tif"),
    ("suburban city with forest and lakes", "landsat/raleigh_2000_l7"),
    ("tropical islands and shallow sea", "landsat/bahamas_l7_rgb.tif"),
    # BigEarthNet CORINE labels: 43_47 is "Coniferous forest, Transitional woodland/shrub"
    ("dense forest", "sentinel2/bigearthnet/S2B_MSIL2A_20170924T093019_43_47"),
    ("desert with no vegetation", "sentinel2/patagonia_bands"),
    ("aerial photo of houses before a tornado",
     "disaster/joplin_tornado_2011/pre_aerial_aligned_to_post_31500-5137.tif"),
    ("stadium", "objects/rsicd/stadium_1.jpg"),
]  # fmt: skip


def query_archive(workdir: Path) -> dict:
    from tools.archive import add_to_archive, search_archive

    path = workdir / "real"
    start = time.perf_counter()
    added = add_to_archive([DATA], archive=path)
    build_s = time.perf_counter() - start
    rows = []
    for text, expected in QUERIES:
        result = search_archive(text, archive=path, k=added.archive_size)
        paths = [str(Path(h.path).relative_to(DATA)) for h in result.hits]
        rank = paths.index(expected) + 1 if expected in paths else None
        latencies = []
        for _ in range(5):
            t0 = time.perf_counter()
            search_archive(text, archive=path, k=5)
            latencies.append(1000 * (time.perf_counter() - t0))
        rows.append(
            {
                "query": text,
                "expected": expected,
                "rank": rank,
                "top3": paths[:3],
                "latency_ms_median": round(float(np.median(latencies)), 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return {
        "scenes": added.archive_size,
        "skipped": [s.model_dump() for s in added.skipped],
        "build_seconds": round(build_s, 1),
        "queries": rows,
        "top1": sum(r["rank"] == 1 for r in rows),
        "top3": sum(r["rank"] is not None and r["rank"] <= 3 for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "bench" / "archive_bench.json"))
    parser.add_argument("--n", type=int, default=100_000, help="stored vectors")
    parser.add_argument("--unique", type=int, default=3000, help="captions really encoded")
    parser.add_argument("--embed-budget-s", type=float, default=300.0)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    args = parser.parse_args(argv)
    # A part that is skipped keeps its figures from an earlier run in the same file.
    previous = Path(args.out)
    report: dict = json.loads(previous.read_text()) if previous.exists() else {}
    report["archive_hnsw_setting"] = HNSW
    workdir = Path(tempfile.mkdtemp(prefix="archive_bench_"))
    try:
        if not args.skip_scale:
            base, info = embed_unique(args.unique, args.embed_budget_s, seed=0)
            rng = np.random.default_rng(1)
            vectors = np.concatenate([base, perturb(base, args.n - len(base), rng)])
            queries = perturb(base, args.queries, np.random.default_rng(2))
            exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
            client = chroma_client_for(workdir / "scale")
            settings = [
                ({"space": "cosine", "ef_construction": 100, "max_neighbors": 16}, [10, 50, 100]),
                ({"space": "cosine", "ef_construction": 200, "max_neighbors": 32}, [64, 128, 256]),
                ({"space": "cosine", "ef_construction": 400, "max_neighbors": 48}, [128, 256]),
            ]
            table = []
            for hnsw, efs in settings:
                table += run_setting(client, "bench_vectors", vectors, queries, exact, hnsw, efs)
            report["scale"] = {
                "stored_vectors": len(vectors), "dim": vectors.shape[1], **info,
                "perturbed_vectors": len(vectors) - info["unique_captions_embedded"],
                "queries": len(queries), "tradeoff": table,
            }  # fmt: skip
        if not args.skip_real:
            report["real_archive"] = query_archive(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")
    return 0


def chroma_client_for(path: Path):
    from tools.archive import ArchiveConfig

    return chroma_client(ArchiveConfig(path=path))


if __name__ == "__main__":
    raise SystemExit(main())
