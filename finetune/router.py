"""Build the tool router (`agent.brains.router`) from the training split.

    python -m finetune.router --out finetune/adapters/local/tool_router.npz

Each training conversation's last user request is labelled with the tool its answer
calls first, or as answered without a tool (chit-chat, declines): those only vote on
whether to call at all, not on which tool. Only the training split's families and
intents are used, so the test and validation splits stay unseen.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from agent.brains.local import BUNDLED_ADAPTER_DIR
from agent.brains.router import NO_TOOL, ROUTER_FILE, ToolRouter
from finetune.data import Example, build_examples, final_step


def labelled_requests(examples: Sequence[Example]) -> tuple[list[str], list[str]]:
    """(last request, first tool its answer calls, or NO_TOOL) for each conversation."""
    texts, labels = [], []
    for example in examples:
        step = final_step(example)
        calls = example.messages[step].get("tool_calls") or []
        texts.append(example.messages[step - 1]["content"])
        labels.append(calls[0]["name"] if calls else NO_TOOL)
    return texts, labels


def build_router(n: int = 4000, seeds: Sequence[int] = (0,)) -> ToolRouter:
    """From `n` training conversations per seed (more seeds: denser neighbours)."""
    from tools.registry import get_registry

    texts: list[str] = []
    labels: list[str] = []
    for seed in seeds:
        more = labelled_requests(build_examples(list(get_registry()), n, "train", seed))
        texts += more[0]
        labels += more[1]
    return ToolRouter.from_texts(texts, labels)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the tool router from training data.")
    parser.add_argument(
        "--n", type=int, default=4000, help="training conversations to build per seed"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="seeds of the training split"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=BUNDLED_ADAPTER_DIR / ROUTER_FILE,
        help="where to write the router (next to the adapter it serves)",
    )
    args = parser.parse_args(argv)
    router = build_router(args.n, args.seeds)
    print(router.save(args.out), f"{len(router.labels)} requests, {len(router.tools)} tools")


if __name__ == "__main__":
    main()
