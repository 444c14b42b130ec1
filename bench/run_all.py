"""`make bench`: run every bench/*_bench.py, one JSON each, and a Markdown table in
bench/RESULTS.md with the machine description and the date. `--collect` only assembles
RESULTS.md from the JSON files already there (each section says when it was run)."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem_gb:.0f} GiB, Python {platform.python_version()}"


def rows(data: object, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(data, dict):
        out: list[tuple[str, str]] = []
        for key, value in data.items():
            out += rows(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}")
        return out
    if isinstance(data, float):
        return [(prefix.rstrip("."), f"{data:.4g}")]
    text = str(data).replace("|", "/").replace("\n", " ")
    if len(text) > 160:  # long lists (per-request details) stay in the JSON
        text = text[:157] + "..."
    return [(prefix.rstrip("."), text)]


def main() -> int:
    collect = "--collect" in sys.argv[1:]  # only assemble RESULTS.md from existing JSON
    scripts = sorted(BENCH.glob("*_bench.py"))
    sections = [f"# Benchmarks\n\n{machine()}; assembled {dt.datetime.now():%Y-%m-%d %H:%M}.\n"]
    failed = 0
    for script in scripts:
        out = BENCH / f"{script.stem}.json"
        if not collect:
            print(f"== {script.name}", flush=True)
            proc = subprocess.run(
                [sys.executable, str(script), "--out", str(out)], cwd=BENCH.parent
            )
            if proc.returncode != 0:
                out.unlink(missing_ok=True)
        if not out.exists():
            failed += 1
            sections.append(f"## {script.stem}\n\nno result (failed or not run).\n")
            continue
        when = dt.datetime.fromtimestamp(out.stat().st_mtime)
        table = "\n".join(f"| {k} | {v} |" for k, v in rows(json.loads(out.read_text())))
        sections.append(
            f"## {script.stem}\n\nrun {when:%Y-%m-%d %H:%M} (`python bench/{script.name}`)\n\n"
            f"| figure | value |\n|---|---|\n{table}\n"
        )
    (BENCH / "RESULTS.md").write_text("\n".join(sections))
    print(f"wrote {BENCH / 'RESULTS.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
