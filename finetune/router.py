"""Build the tool router (`agent.brains.router`) from the training split.

    python -m finetune.router --out finetune/adapters/local/tool_router.npz

Each training conversation's last user request is labelled with the tool its answer
calls first; requests answered without a tool are left out (the router only weighs
tools once the model has chosen to call one). Only the training split's families and
intents are used, so the test and validation splits stay unseen.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from agent.brains.local import BUNDLED_ADAPTER_DIR
from agent.brains.router import ROUTER_FILE, ToolRouter
from finetune.data import Example, build_examples, final_step


def labelled_requests(examples: Sequence[Example]) -> tuple[list[str], list[str]]:
    """(request, first tool called) for each conversation whose last step calls one."""
    texts, labels = [], []
    for example in examples:
        step = final_step(example)
        calls = example.messages[step].get("tool_calls") or []
        if calls:
            texts.append(example.messages[step - 1]["content"])
            labels.append(calls[0]["name"])
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
