"""The Chroma scene archive on real samples: text and example queries, metadata filters,
idempotent re-adds, unreadable scenes, and a real `chroma run` server over HTTP."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DATA, sample
from tools.archive import ArchiveConfig, add_to_archive, search_archive
from tools.errors import ArgumentError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SCENES = [
    "sentinel2/spain_flood_2019_s2_l1c.tif",
    "sar/spain_flood_2019_s1.tif",
    "sentinel2/patagonia_bands",
    "landsat/raleigh_2000_l7",
    "landsat/bahamas_l7_rgb.tif",
    "sentinel2/bigearthnet/S2A_MSIL2A_20170617T113321_36_85",
    "disaster/joplin_tornado_2011/post_aerial_tile_31500-5137.tif",
]


def _rel(path: str) -> str:
    return str(Path(path).relative_to(DATA))


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    paths = [sample(s) for s in SCENES]
    bad = tmp_path_factory.mktemp("bad") / "broken.tif"
    bad.write_bytes(b"not a GeoTIFF")
    where = tmp_path_factory.mktemp("archive") / "chroma"
    result = add_to_archive([*paths, bad], archive=where)
    return where, result, bad


def test_build_reports_added_and_skipped(archive):
    _, result, bad = archive
    assert result.archive_size == len(SCENES) == len(result.added)
    assert [s.path for s in result.skipped] == [str(bad)]
    assert "broken.tif" in result.skipped[0].error
    spain = next(e for e in result.added if e.path.endswith("spain_flood_2019_s2_l1c.tif"))
    assert spain.sensor == "sentinel2_l1c" and spain.crs == "EPSG:4326"
    assert spain.bounds_epsg4326[1] == pytest.approx(38.09, abs=0.05)
    assert 0.2 < spain.land_cover["water"] < 0.4 and spain.cloud_share < 0.01


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("flooded farmland", "sentinel2/spain_flood_2019_s2_l1c.tif"),
        ("arid land", "sentinel2/patagonia_bands"),
        ("radar image of a flood", "sar/spain_flood_2019_s1.tif"),
    ],
)
def test_text_query_finds_the_scene(archive, text, expected):
    where, _, _ = archive
    result = search_archive(text, archive=where, k=3)
    assert expected in [_rel(h.path) for h in result.hits]
    assert result.hits[0].score >= result.hits[-1].score


def test_query_by_example_id_and_path(archive):
    where, result, _ = archive
    spain = next(e for e in result.added if e.path.endswith("spain_flood_2019_s2_l1c.tif"))
    by_id = search_archive(like=spain.id, archive=where, k=3)
    assert spain.id not in [h.id for h in by_id.hits]  # the example itself is left out
    assert _rel(by_id.hits[0].path) == "sar/spain_flood_2019_s1.tif"  # same flood
    by_path = search_archive(like=spain.path, archive=where, k=3)
    assert [h.id for h in by_path.hits] == [h.id for h in by_id.hits]


def test_metadata_filters(archive):
    where, _, _ = archive
    s2 = search_archive("farmland", archive=where, sensor="sentinel-2", k=10)
    assert {h.sensor for h in s2.hits} <= {"sentinel2_l1c", "sentinel2_l2a"} and len(s2.hits) == 3
    spain_box = [-1.0, 37.9, -0.5, 38.3]
    boxed = search_archive("water", archive=where, bbox=spain_box, k=10)
    assert sorted(_rel(h.path) for h in boxed.hits) == sorted(SCENES[:2])
    dated = search_archive(archive=where, date_from="2017-01-01", date_to="2017-12-31", k=10)
    assert [h.date for h in dated.hits] == ["2017-06-17"]
    clear = search_archive("land", archive=where, max_cloud=0.0, k=10)
    assert all(h.cloud_share == 0.0 for h in clear.hits) and clear.hits
    with pytest.raises(ArgumentError, match="min_lon"):
        search_archive("x", archive=where, bbox=[1, 2, 0, 3])
    with pytest.raises(ArgumentError, match="neither"):
        search_archive(like="no-such-scene", archive=where)


def test_re_adding_is_idempotent(archive):
    where, result, _ = archive
    again = add_to_archive([sample(SCENES[0]), sample(SCENES[2])], archive=where)
    assert again.added == [] and len(again.already_indexed) == 2
    assert again.archive_size == result.archive_size


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def chroma_server(tmp_path):
    chroma = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    if not Path(chroma).exists():
        pytest.skip("the chroma CLI is not installed (pip install chromadb)")
    port = _free_port()
    log = open(tmp_path / "chroma.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [chroma, "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if proc.poll() is not None:
                pytest.fail(f"chroma run exited: {(tmp_path / 'chroma.log').read_text()[-500:]}")
            time.sleep(0.2)
        else:
            pytest.fail("chroma run did not listen within 30 s")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.slow
def test_http_client_against_a_real_server(chroma_server):
    config = ArchiveConfig(host="127.0.0.1", port=chroma_server)
    added = add_to_archive(
        [sample("sentinel2/patagonia_bands"), sample("landsat/bahamas_l7_rgb.tif")],
        archive=config,
    )
    assert added.archive_size == 2 and not added.skipped
    hits = search_archive("desert", archive=config, k=1).hits
    assert _rel(hits[0].path) == "sentinel2/patagonia_bands"
    again = add_to_archive([sample("landsat/bahamas_l7_rgb.tif")], archive=config)
    assert again.already_indexed and again.archive_size == 2
