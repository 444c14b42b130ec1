"""The `eoagent` command as a user meets it: real processes, JSON out, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, sample, write_tif


def eoagent(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]


def test_info_json_on_spain(spain_s2: Path) -> None:
    proc = eoagent("info", str(spain_s2), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["sensor"] == "sentinel2_l1c" and info["crs"] == "EPSG:4326"
    assert info["bands"]["nir"]["band_id"] == "B8"


def test_index_json_has_the_stable_keys(spain_s2: Path, tmp_path: Path) -> None:
    out = tmp_path / "ndvi.tif"
    proc = eoagent("index", "NDVI", str(spain_s2), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for key in ("index", "mean", "min", "max", "valid_pixels", "output"):
        assert key in result
    assert Path(result["output"]).resolve() == out.resolve() and out.exists()
    assert -1 <= result["min"] <= result["mean"] <= result["max"] <= 1


def test_flood_json_has_the_stable_keys(spain_s2: Path, spain_s1: Path, tmp_path: Path) -> None:
    out = tmp_path / "flood.tif"
    proc = eoagent(
        "flood", "--post", str(spain_s2), "--post", str(spain_s1), "--out", str(out), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert 0 < result["water_fraction"] < 1 and result["flooded_area_ha"] > 0
    assert Path(result["output"]).exists()


def test_missing_file(tmp_path: Path) -> None:
    assert_one_line_error(eoagent("index", "NDVI", str(tmp_path / "absent.tif")), "no such file")


def test_corrupt_raster_leaves_no_output(tmp_path: Path) -> None:
    good = write_tif(
        tmp_path / "good.tif",
        np.ones((4, 64, 64), dtype=np.uint16),
        descriptions=["B2", "B3", "B4", "B8"],
    )
    bad = tmp_path / "bad.tif"
    bad.write_bytes(good.read_bytes()[:400])
    out = tmp_path / "out" / "ndvi.tif"
    assert_one_line_error(eoagent("index", "NDVI", str(bad), "--out", str(out)), "corrupt")
    assert not out.exists()
    assert not list(tmp_path.rglob("*.part*"))


def test_missing_band_names_band_index_and_formula(tmp_path: Path) -> None:
    rgb = sample("disaster/joplin_tornado_2011/post_aerial_tile_31500-5137.tif")
    out = tmp_path / "ndvi.tif"
    proc = eoagent("index", "NDVI", str(rgb), "--out", str(out))
    assert_one_line_error(proc, "nir", "NDVI")
    assert not out.exists()


def test_unknown_index_suggests_names(spain_s2: Path) -> None:
    assert_one_line_error(eoagent("index", "NDVVI", str(spain_s2)), "NDVI")


def test_bad_band_mapping(spain_s2: Path) -> None:
    assert_one_line_error(eoagent("info", str(spain_s2), "--bands", "nir"), "name=index")
    assert_one_line_error(eoagent("info", str(spain_s2), "--bands", "nir=8,nir=4"), "twice")


def test_pre_post_on_different_grids(spain_s2: Path, tmp_path: Path) -> None:
    other = write_tif(
        tmp_path / "S2A_MSIL2A_20190901_other.tif",
        np.full((4, 32, 32), 1000, dtype=np.uint16),
        descriptions=["B2", "B3", "B4", "B8"],
    )
    proc = eoagent(
        "vegetation", "--pre", str(other), "--post", str(spain_s2), "--out", str(tmp_path / "v.tif")
    )
    assert_one_line_error(proc, "different grids", "--align")
    assert not (tmp_path / "v.tif").exists()


def test_usage_error_is_one_line() -> None:
    proc = eoagent("flood")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["index", "flood", "burn", "change", "damage", "info"])
def test_every_command_has_json_flag(command: str) -> None:
    proc = eoagent(command, "--help")
    assert proc.returncode == 0 and "--json" in proc.stdout
