"""`python app.py`: eoagent's entry point for a user.

The Gradio chat over the agent is built in a later step (issue 6); until then this runs
the terminal tour of the tools on the bundled example, exactly as `eoagent demo` does.
"""

from __future__ import annotations

import sys

from agent.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
