"""The `eoagent` command: the tools from a terminal, each with `--json`.

Bad input exits non-zero with one line on stderr that says what was wrong and what to
do; outputs are written atomically, so a failed command leaves no partial file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from pydantic import BaseModel

from tools.errors import EOError, one_line

DEFAULT_OUT_DIR = Path("eoagent_output")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (plus the exit code 2), not a page."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"eoagent: error: {message} (see `{self.prog} --help`)\n")


def _band_map(text: str | None) -> dict[str, int | str] | None:
    if not text:
        return None
    mapping: dict[str, int | str] = {}
    for item in text.split(","):
        name, sep, where = item.partition("=")
        if not sep or not name.strip() or not where.strip():
            raise EOError(
                f"Bad band mapping '{item}'; write it as name=index, e.g. --bands nir=4,red=3."
            )
        if name.strip() in mapping:
            raise EOError(f"Band mapping names '{name.strip()}' twice; give each band once.")
        mapping[name.strip()] = int(where) if where.strip().isdigit() else where.strip()
    return mapping


def _open(path: str, bands: str | None = None):  # noqa: ANN202 - Scene, imported lazily
    from tools.raster import open_scene

    return open_scene(path, band_map=_band_map(bands))


def _default_out(args: argparse.Namespace, scene_path: str, tool: str) -> Path:
    if args.out:
        return Path(args.out)
    return DEFAULT_OUT_DIR / f"{Path(scene_path).stem}_{tool}.tif"


def _emit(result: BaseModel | dict[str, Any], as_json: bool) -> None:
    data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    if as_json:
        print(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
            print(f"{key:>20}: {inner}")
        elif isinstance(value, list):
            if value:
                print(f"{key:>20}: " + "; ".join(_fmt(v) for v in value))
        else:
            print(f"{key:>20}: {_fmt(value)}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


# -- commands -------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> None:
    scene = _open(args.scene, args.bands)
    summary = scene.summary()
    if not args.json:  # one readable line for the bands: name=id, units once
        bands = summary["bands"]
        units = sorted({b["units"] for b in bands.values()})
        summary = {**summary, "bands": ", ".join(f"{n}={b['band_id']}" for n, b in bands.items())}
        summary["units"] = ", ".join(units)
    _emit(summary, args.json)


def cmd_index(args: argparse.Namespace) -> None:
    from tools.spectral import spectral_index

    scene = _open(args.scene, args.bands)
    result = spectral_index(scene, args.name, out=_default_out(args, args.scene, args.name.lower()))
    _emit(result, args.json)


def cmd_water(args: argparse.Namespace) -> None:
    from tools.water import water_mask

    scenes = [_open(p, args.bands) for p in args.scenes]
    result = water_mask(scenes, out=_default_out(args, args.scenes[0], "water"), method=args.method)
    _emit(result, args.json)


def cmd_flood(args: argparse.Namespace) -> None:
    from tools.water import flood_map

    post = [_open(p, args.bands) for p in args.post]
    pre = [_open(p, args.bands) for p in args.pre] if args.pre else None
    result = flood_map(post, pre, out=_default_out(args, args.post[0], "flood"), align=args.align)
    _emit(result, args.json)


def cmd_burn(args: argparse.Namespace) -> None:
    from tools.change import burn_severity

    result = burn_severity(
        _open(args.pre, args.bands),
        _open(args.post, args.bands),
        out=_default_out(args, args.post, "burn"),
        align=args.align,
    )
    _emit(result, args.json)


def cmd_vegetation(args: argparse.Namespace) -> None:
    from tools.change import vegetation_change

    result = vegetation_change(
        _open(args.pre, args.bands),
        _open(args.post, args.bands),
        out=_default_out(args, args.post, "vegetation"),
        align=args.align,
    )
    _emit(result, args.json)


def cmd_change(args: argparse.Namespace) -> None:
    from tools.change import change_detection

    result = change_detection(
        _open(args.pre, args.bands),
        _open(args.post, args.bands),
        out=_default_out(args, args.post, "change"),
        align=args.align,
    )
    _emit(result, args.json)


def cmd_damage(args: argparse.Namespace) -> None:
    from tools.damage import building_damage

    out = Path(args.out) if args.out else DEFAULT_OUT_DIR / f"{Path(args.post).stem}_damage.geojson"
    result = building_damage(
        _open(args.pre), _open(args.post), args.footprints, out=out, align=args.align
    )
    _emit(result, args.json)


def cmd_run(args: argparse.Namespace) -> None:
    from agent.runner import run_tasks

    summary = run_tasks(args.tasks, args.out, backend=args.backend)
    print(f"{summary.tasks} tasks, {summary.failed} failed -> {summary.out_path}")


def cmd_chat(args: argparse.Namespace) -> None:
    from agent.chat import chat

    code = chat(images=args.image or [], session_id=args.session, backend=args.backend)
    if code:
        raise SystemExit(code)


def _archive_config(args: argparse.Namespace):  # noqa: ANN202 - ArchiveConfig, lazy import
    from agent.settings import Settings
    from tools.archive import ArchiveConfig

    config = ArchiveConfig.from_settings(Settings())
    updates = {"path": Path(args.archive) if args.archive else None, "host": args.host}
    return config.model_copy(update={k: v for k, v in updates.items() if v})


def cmd_archive_add(args: argparse.Namespace) -> None:
    from tools.archive import add_to_archive

    _emit(add_to_archive(args.paths, archive=_archive_config(args)), args.json)


def cmd_archive_search(args: argparse.Namespace) -> None:
    from tools.archive import search_archive

    bbox = [float(v) for v in args.bbox.split(",")] if args.bbox else None
    if bbox is not None and len(bbox) != 4:
        raise EOError("--bbox takes four numbers: west,south,east,north in degrees.")
    result = search_archive(
        args.text,
        args.like,
        archive=_archive_config(args),
        date_from=args.date_from,
        date_to=args.date_to,
        bbox=bbox,
        sensor=args.sensor,
        max_cloud=args.max_cloud,
        k=args.k,
    )
    _emit(result, args.json)


def cmd_finetune(args: argparse.Namespace) -> None:
    from finetune.options import config_from_args
    from finetune.train import FinetuneConfig, train

    report = train(config_from_args(FinetuneConfig, args))
    report.pop("losses", None)
    print(json.dumps(report, indent=2, default=str))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from finetune.evaluate import EvalConfig, evaluate, table
    from finetune.options import config_from_args

    print(table(evaluate(config_from_args(EvalConfig, args))))


def cmd_serve(args: argparse.Namespace) -> None:
    from agent.settings import Settings
    from agent.ui import serve

    settings = Settings()
    if args.backend:
        settings = settings.model_copy(update={"backend": args.backend})
    serve(settings, args.host, args.port, max_upload_mb=args.max_upload_mb)


def cmd_demo(args: argparse.Namespace) -> None:
    from agent.demo import run_demo

    run_demo(Path(args.workdir))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="eoagent", description="Earth-observation tools and agent.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    def command(
        name: str, fn: Callable[[argparse.Namespace], None], help_text: str, out: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=fn)
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        if out:
            p.add_argument(
                "--out", help="output path (.tif; .geojson and .png are written beside it)"
            )
        return p

    bands_help = "explicit band mapping, e.g. nir=4,red=3 (1-based indices or band ids)"

    p = command("info", cmd_info, "sensor, bands, grid, bounds and date of a scene", out=False)
    p.add_argument("scene", help="a raster file or a folder of one-band files")
    p.add_argument("--bands", help=bands_help)

    p = command("index", cmd_index, "any spyndex spectral index on a scene")
    p.add_argument("name", help="index name, e.g. NDVI, MNDWI, NBR, EVI")
    p.add_argument("scene")
    p.add_argument("--bands", help=bands_help)

    p = command("water", cmd_water, "water mask of one date (optical, SAR, or both fused)")
    p.add_argument(
        "scenes", nargs="+", help="an optical and/or a SAR scene of the same date and grid"
    )
    p.add_argument("--method", default="auto", choices=["auto", "optical", "sar", "fusion"])
    p.add_argument("--bands", help=bands_help)

    p = command(
        "flood", cmd_flood, "flood map: new water on post versus pre, permanent water apart"
    )
    p.add_argument(
        "--post", action="append", required=True, help="post-event scene (repeat for optical + SAR)"
    )
    p.add_argument("--pre", action="append", help="pre-event scene (repeat for optical + SAR)")
    p.add_argument("--align", action="store_true", help="resample pre onto post's grid")
    p.add_argument("--bands", help=bands_help)

    for name, fn, text in (
        ("burn", cmd_burn, "burn severity: dNBR with the USGS classes"),
        ("vegetation", cmd_vegetation, "vegetation change: dNDVI loss and gain"),
        (
            "change",
            cmd_change,
            "generic change between two co-registered scenes (RGB or multispectral)",
        ),
    ):
        p = command(name, fn, text)
        p.add_argument("--pre", required=True)
        p.add_argument("--post", required=True)
        p.add_argument("--align", action="store_true", help="resample pre onto post's grid")
        p.add_argument("--bands", help=bands_help)

    p = command("damage", cmd_damage, "per-building damage from a pixel-aligned pre/post pair")
    p.add_argument("--pre", required=True)
    p.add_argument("--post", required=True)
    p.add_argument("--footprints", required=True, help="building footprints (GeoJSON)")
    p.add_argument("--align", action="store_true", help="resample pre onto post's grid")

    from typing import get_args

    from agent.settings import Backend

    backends = list(get_args(Backend))
    p = sub.add_parser("run", help="run scripted agent tasks (JSONL in, JSONL out)")
    p.set_defaults(func=cmd_run)
    p.add_argument("tasks", help="TASKS.jsonl: {id, images: {handle: path}, turns: [{user}]}")
    p.add_argument("--out", required=True, help="RESULTS.jsonl to write")
    p.add_argument("--backend", choices=backends, help="brain backend (default from settings)")

    p = sub.add_parser("chat", help="chat with the agent in the terminal")
    p.set_defaults(func=cmd_chat)
    p.add_argument("--image", action="append", help="load a scene as handle=path (repeatable)")
    p.add_argument("--session", help="resume a saved session by id")
    p.add_argument("--backend", choices=backends, help="brain backend (default from settings)")

    archive = sub.add_parser("archive", help="the scene archive (Chroma): add and search")
    archive_sub = archive.add_subparsers(
        dest="archive_command", required=True, parser_class=OneLineParser
    )
    for name, fn, text in (
        ("add", cmd_archive_add, "index scenes (files or folders) in the archive"),
        ("search", cmd_archive_search, "search the archive by text, example scene or metadata"),
    ):
        p = archive_sub.add_parser(name, help=text, description=text)
        p.set_defaults(func=fn)
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.add_argument("--archive", help="embedded archive folder (default from settings)")
        p.add_argument("--host", help="Chroma server host (default from settings)")
        if name == "add":
            p.add_argument("paths", nargs="+", help="scene files or folders")
        else:
            p.add_argument("text", nargs="?", help="what to look for, e.g. 'flooded farmland'")
            p.add_argument("--like", help="a scene path or archive id to find similar scenes")
            p.add_argument("--date-from", help="earliest date, YYYY-MM-DD")
            p.add_argument("--date-to", help="latest date, YYYY-MM-DD")
            p.add_argument("--bbox", help="west,south,east,north in degrees")
            p.add_argument("--sensor", help="sentinel-2, sentinel-1, landsat or rgb")
            p.add_argument("--max-cloud", type=float, help="largest cloud share, 0-1")
            p.add_argument("-k", type=int, default=5, help="how many scenes to return")

    from finetune.evaluate import EvalConfig
    from finetune.options import add_config_arguments
    from finetune.train import FinetuneConfig

    p = sub.add_parser("finetune", help="LoRA/QLoRA fine-tuning of a brain on tool-call data")
    p.set_defaults(func=cmd_finetune)
    add_config_arguments(p, FinetuneConfig)
    p = sub.add_parser("evaluate", help="tool-call accuracy of a brain, base vs adapter")
    p.set_defaults(func=cmd_evaluate)
    add_config_arguments(p, EvalConfig)

    p = sub.add_parser("serve", help="the chat app in the browser (Gradio, 127.0.0.1)")
    p.set_defaults(func=cmd_serve)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-upload-mb", type=int, default=200, help="largest upload accepted")
    p.add_argument("--backend", choices=backends, help="brain backend (default from settings)")

    p = sub.add_parser("demo", help="a terminal tour of the tools on a generated example")
    p.set_defaults(func=cmd_demo)
    p.add_argument(
        "--workdir", default="eoagent_demo", help="where the example scenes and results go"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Model libraries print loading bars and optional-kernel notices; a command's output
    # should be its answer.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_TQDM", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("EOAGENT_DEBUG") == "1"
    started = time.perf_counter()
    try:
        args.func(args)
    except EOError as exc:
        if debug:
            raise
        print(f"eoagent: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("eoagent: interrupted; no partial output was kept.", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an unforeseen input: still one line for the user
        if debug:
            raise
        print(
            f"eoagent: error: {type(exc).__name__}: {one_line(str(exc))} "
            "(unexpected; rerun with --debug for details and report it)",
            file=sys.stderr,
        )
        return 1
    if debug:
        print(f"[{time.perf_counter() - started:.2f} s]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
