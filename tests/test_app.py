"""The Gradio app through gradio_client, served on 127.0.0.1 in this process, with the
scripted brain: a three-turn conversation on the Spain flood scene, separate sessions,
bad uploads, the size cap and a brain change without a restart."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file  # noqa: E402

from agent.settings import Settings  # noqa: E402
from agent.ui import EOApp  # noqa: E402
from agent.ui_uploads import UploadError, check_upload  # noqa: E402
from tests.conftest import REPO, sample  # noqa: E402

SPAIN = "sentinel2/spain_flood_2019_s2_l1c.tif"
MAX_UPLOAD_MB = 4

PLAN = [
    {
        "calls": [{"name": "scene_info", "args": {"scene": "post"}}],
        "answer": "post is {info_1.sensor_title}, {info_1.width}x{info_1.height} px.",
    },
    {
        "calls": [{"name": "water_mask", "args": {"scenes": ["post"]}}],
        "answer": "Water covers {water_1.water_area_ha:.1f} ha "
        "({water_1.water_fraction:.1%} of the scene).",
    },
    {
        "calls": [{"name": "export", "args": {"result": "water_1", "format": "geojson"}}],
        "answer": "Exported {last.features} water polygons to {last.path}.",
    },
]
OTHER_PLAN = [{"calls": [], "answer": "This is the other plan."}] * 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_config(url: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> float:
    """Seconds until the page answers with its Gradio config (HTTP 200)."""
    import httpx

    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            with httpx.Client(timeout=2) as http:
                if http.get(f"{url}/config").status_code == 200:
                    return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"the app did not answer on {url} within {timeout_s} s")


def start_app(root: Path, plan: Path, *extra: str) -> tuple[subprocess.Popen, str, float]:
    """`python app.py` in a subprocess with the scripted brain; (process, url, start-up s)."""
    port = free_port()
    env = {
        **os.environ,
        "EOAGENT_BACKEND": "scripted",
        "EOAGENT_SCRIPT_PATH": str(plan),
        "EOAGENT_WORKSPACE_DIR": str(root / "ws"),
        "GRADIO_TEMP_DIR": str(root / "gradio"),
        "PYTHONWARNINGS": "ignore",
    }
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), "--port", str(port), *extra],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_config(url, proc)
    except Exception:
        proc.kill()
        raise
    return proc, url, time.perf_counter() - started


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    (root / "plan.json").write_text(json.dumps(PLAN))
    (root / "other.json").write_text(json.dumps(OTHER_PLAN))
    proc, url, _ = start_app(root, root / "plan.json", "--max-upload-mb", str(MAX_UPLOAD_MB))
    try:
        yield url, root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _client(server) -> Client:
    return Client(server[0], verbose=False)


def _texts(history: list[dict[str, Any]], role: str = "assistant") -> list[str]:
    out = []
    for message in history:
        if message["role"] != role:
            continue
        for part in message["content"]:
            if part.get("type") == "text":
                title = (message.get("metadata") or {}).get("title") or ""
                out.append(f"{title} {part['text']}".strip())
    return out


def _file(part: dict[str, Any]) -> str:
    """The path of a file part of a chat message ('' for text); the client downloads
    files and gives local paths."""
    if part.get("type") != "file":
        return ""
    file = part["file"]
    return str(file.get("path") if isinstance(file, dict) else file)


def _send(client: Client, text: str, files: tuple[Path, ...] = ()) -> tuple:
    message = {"text": text, "files": [handle_file(str(f)) for f in files]}
    return client.predict(message, api_name="/chat")


def test_three_turn_conversation_on_the_spain_scene(server, monkeypatch):
    scene = sample(SPAIN)
    client = _client(server)
    out = _send(client, "post=spain_flood_2019_s2_l1c.tif Which sensor is this?", (scene,))
    history = out[0]
    said = _texts(history)
    assert any("Loaded **`post`**" in t and "Sentinel-2" in t for t in said), said
    assert said[-1].startswith("post is Sentinel-2 MSI Level-1C"), said[-1]
    assert "512x512 px" in said[-1]
    assert any("✅ scene_info → info_1" in t for t in said)
    assert "`post`" in out[-1]  # the session line lists the scene's handle

    job = client.submit(
        {"text": "How much water is there?", "files": []}, history, api_name="/chat"
    )
    frames = list(job)
    history = job.result()[0]
    pending = [
        m
        for frame in frames
        for m in frame[0]
        if (m.get("metadata") or {}).get("status") == "pending"
    ]
    assert pending, "a running tool shows a pending (spinner) message while it runs"
    said = _texts(history)
    assert said[-1].startswith("Water covers ") and " ha (" in said[-1], said[-1]
    tool = next(
        m for m in history if "water_mask" in ((m.get("metadata") or {}).get("title") or "")
    )
    assert tool["metadata"]["status"] == "done" and tool["metadata"]["duration"] > 0
    assert '"scenes"' in tool["content"][0]["text"]  # the arguments are shown
    overlay, table = job.result()[2], job.result()[4]
    assert overlay and Path(overlay).suffix == ".png" and Path(overlay).exists()
    quantities = {row[2]: row[3] for row in table["data"]}
    assert quantities["water_area_ha"] > 0
    assert any(_file(c).endswith(".png") for m in history for c in m["content"]), (
        "the overlay also appears in the chat"
    )

    out = _send(client, "Export it as GeoJSON.")
    answer = _texts(out[0])[-1]
    assert answer.startswith("Exported ") and "water polygons" in answer
    exported = Path(answer.rsplit(" to ", 1)[1].rstrip("."))
    assert exported.exists() and exported.suffix == ".geojson"
    assert json.loads(exported.read_text())["features"]
    downloads = [Path(p).name for p in out[5]]
    assert "water_1.tif" in downloads and "water_1.geojson" in downloads

    # A reload: the page asks for the session by the id the browser kept (the browser
    # test reloads a real page; here the same handler runs on the workspace on disk).
    root = server[1]
    session_id = exported.parents[1].name
    settings = Settings(
        backend="scripted", script_path=root / "plan.json", workspace_dir=root / "ws"
    )
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(root / "gradio"))
    restored = EOApp(settings).restore(session_id, None)
    assert restored[0] == session_id
    again = [m["content"] for m in restored[2] if m["role"] == "assistant"]
    assert answer in again and again[-1]["path"].endswith("water_1.geojson")
    assert any("📥 post" in (m.get("metadata") or {}).get("title", "") for m in restored[2])


def test_two_clients_never_share_scenes(server):
    scene = sample(SPAIN)
    first, second = _client(server), _client(server)
    _send(first, "post=spain_flood_2019_s2_l1c.tif Which sensor is this?", (scene,))
    out = _send(second, "Which sensor is this?")
    said = _texts(out[0])
    assert any("scene_info failed" in t and "No scene 'post'" in t for t in said), said
    assert "scenes: none yet" in out[-1]


def _tiny_png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )


def test_bad_uploads_are_reported_and_the_app_goes_on(server, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    fake_tif = tmp_path / "fake.tif"
    fake_tif.write_text("hello, I am not a GeoTIFF")
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + b"\x08\x00\x00\x00" + b"\xff" * 400)
    bomb = tmp_path / "huge.png"
    bomb.write_bytes(_tiny_png_header(60000, 60000) + b"\x00" * 64)
    client = _client(server)
    out = _send(client, "", (text, fake_tif, corrupt, bomb))
    said = "\n".join(_texts(out[0]))
    assert "notes.txt was not loaded: '.txt' files are not supported" in said
    assert "fake.tif was not loaded: it is not an image" in said
    assert "corrupt.tif was not loaded" in said
    assert "huge.png was not loaded: it is 60000x60000 px" in said
    assert "Upload refused" in said
    assert "scenes: none yet" in out[-1]
    out = _send(client, "Which sensor is this?")  # still answering, with what went wrong
    assert _texts(out[0])[-1].startswith("scene_info failed:")
    assert "No scene 'post'" in _texts(out[0])[-1]


def test_upload_size_cap(server, tmp_path):
    big = tmp_path / "big.tif"
    big.write_bytes(b"II*\x00" + b"\x00" * (MAX_UPLOAD_MB * 2**20 + 1024))
    with pytest.raises(UploadError, match=r"above the 4 MB upload limit"):
        check_upload(big, "big.tif", max_bytes=MAX_UPLOAD_MB * 2**20, max_pixels=10**8)
    client = _client(server)
    with pytest.raises(Exception, match=r"(?i)size|large|413"):
        _send(client, "", (big,))
    out = _send(client, "still there?")  # the server survived the refused upload
    assert out[0]


def test_settings_change_the_brain_without_restart(server):
    root = server[1]
    client = _client(server)
    missing = client.predict(
        "scripted", "", "", "", str(root / "missing.json"), api_name="/apply_settings"
    )
    assert missing.startswith("⚠️ Not applied") and "missing.json" in missing
    done = client.predict(
        "scripted", "", "", "", str(root / "other.json"), api_name="/apply_settings"
    )
    assert done.startswith("✅ Brain **scripted** ready")
    out = _send(client, "hello")
    assert _texts(out[0])[-1] == "This is the other plan."
