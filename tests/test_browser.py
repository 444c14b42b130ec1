"""A real headless Chromium on the page: upload the Spain scene, ask, see the answer and
the overlay, reload and find the conversation still there. A screenshot goes to the
test's tmp folder.

Chromium comes from Debian (`apt-get install -y chromium`) and playwright-core from npm
into tests/browser/node_modules (git-ignored); both are installed here when missing. The
test skips only when Chromium cannot be installed (or there is no Node.js to drive it).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.conftest import REPO, sample
from tests.test_app import start_app

BROWSER_DIR = REPO / "tests" / "browser"
SCRIPT = BROWSER_DIR / "session.mjs"
PLAN = [
    {
        "calls": [{"name": "water_mask", "args": {"scenes": ["post"]}}],
        "answer": "Water covers {water_1.water_area_ha:.1f} ha "
        "({water_1.water_fraction:.1%} of the scene).",
    }
]


def _run(command: list[str], timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.skip("Chromium is not installed and there is no apt-get to install it")
    try:
        _run([apt, "update"], 300)
        done = _run([apt, "install", "-y", "chromium"], 600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"Chromium could not be installed: {exc}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip(f"Chromium could not be installed: {done.stderr.strip()[-300:]}")
    return found


@pytest.fixture(scope="module")
def browser_env() -> str:
    chromium = _chromium()
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js (node and npm) is needed to drive Chromium with playwright-core")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").exists():
        done = _run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(BROWSER_DIR)], 300)
        assert done.returncode == 0, f"npm install playwright-core failed: {done.stderr[-500:]}"
    return chromium


def test_upload_ask_answer_overlay_reload(browser_env, tmp_path):
    scene = sample("sentinel2/spain_flood_2019_s2_l1c.tif")
    (tmp_path / "plan.json").write_text(json.dumps(PLAN))
    proc, url, startup_s = start_app(tmp_path, tmp_path / "plan.json")
    shot = tmp_path / "session.png"
    options = {
        "url": url,
        "chromium": browser_env,
        "steps": [
            {
                "files": [str(scene)],
                "text": "post=spain_flood_2019_s2_l1c.tif How much water is there?",
                "expect": "Water covers",
            }
        ],
        "screenshot": str(shot),
        "reload": True,
        "timeout_ms": 60000,
    }
    try:
        done = _run(["node", str(SCRIPT), json.dumps(options)], 150)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
    lines = done.stdout.strip().splitlines()
    assert lines, f"no output from the browser script: {done.stderr[-1000:]}"
    result = json.loads(lines[-1])
    assert result["ok"], result
    assert "📥 post ← spain_flood_2019_s2_l1c.tif" in result["chat"]
    assert "water_mask → water_1" in result["chat"]
    answer = result["chat"].split("Water covers", 1)[1].split(")", 1)[0]
    assert " ha (" in answer
    assert "Water covers" in result["after_reload"], "the conversation survives a reload"
    assert "water_mask → water_1" in result["after_reload"]
    assert shot.exists() and shot.stat().st_size > 10_000
    print(f"app start {startup_s:.1f} s; browser timings {result['timings']}")
