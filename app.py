"""`python app.py`: the eoagent chat in a browser (Gradio), on 127.0.0.1:7860.

The brain comes from the settings (EOAGENT_BACKEND, model paths, EOAGENT_SCRIPT_PATH ...)
and can be changed in the page's settings panel. Same as `eoagent serve`.

    python app.py [--host 127.0.0.1] [--port 7860] [--max-upload-mb 200]
"""

from __future__ import annotations

import argparse
import sys

from agent.settings import Settings
from agent.ui import serve
from agent.ui_uploads import DEFAULT_MAX_UPLOAD_MB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="app.py", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    parser.add_argument(
        "--max-upload-mb", type=int, default=DEFAULT_MAX_UPLOAD_MB, help="largest upload"
    )
    args = parser.parse_args(argv)
    serve(Settings(), args.host, args.port, max_upload_mb=args.max_upload_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
