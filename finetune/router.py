"""Build the tool router (`agent.brains.router`) from the training split.

    python -m finetune.router --out finetune/adapters/local/tool_router.npz

Each training conversation's last user request is labelled with the tool its answer
calls first, or as answered without a tool (chit-chat, declines): those only vote on
whether to call at all, not on which tool. A terse request for the previous call again
("and for t1?") is labelled as such, not with the tool: it votes for whichever tool the
conversation at hand called last. Only the training split's families and
intents are used, so the test and validation splits stay unseen.

    python -m finetune.router --check --out /tmp/router.npz

also reports how often the router alone picks each validation request's tool.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from agent.brains.local import BUNDLED_ADAPTER_DIR
from agent.brains.router import NO_TOOL, ROUTER_FILE, SAME_TOOL, ToolRouter
from finetune.data import Example, build_examples, final_step


def labelled_requests(examples: Sequence[Example]) -> tuple[list[str], list[str]]:
    """(last request, first tool its answer calls, or NO_TOOL, or SAME_TOOL for an
    ellipsis) for each conversation."""
    texts, labels = [], []
    for example in examples:
        step = final_step(example)
        calls = example.messages[step].get("tool_calls") or []
        texts.append(example.messages[step - 1]["content"])
        if example.kind == "ellipsis":
            labels.append(SAME_TOOL)
        else:
            labels.append(calls[0]["name"] if calls else NO_TOOL)
    return texts, labels


def previous_tool(example: Example) -> str | None:
    """The tool called last before the request being answered."""
    step = final_step(example)
    calls = [c for m in example.messages[: step - 1] for c in m.get("tool_calls") or []]
    return calls[-1]["name"] if calls else None


def router_accuracy(router: ToolRouter, examples: Sequence[Example]) -> dict[str, float]:
    """The router alone: share of tool requests whose most likely tool is the one called,
    and share of all requests whose call-or-not is right (P(call) > 0.5)."""
    from tools.registry import get_registry

    names = get_registry().names
    texts, labels = labelled_requests(examples)
    named = called = tool_items = 0
    for example, text, label in zip(examples, texts, labels, strict=True):
        previous = previous_tool(example)
        expected = previous if label == SAME_TOOL else label
        share = router.call_share(text)
        called += (share is None or share > 0.5) == (expected != NO_TOOL)
        if expected != NO_TOOL:
            prior = router.prior(text, names, previous)
            named += max(prior, key=prior.__getitem__) == expected
            tool_items += 1
    return {"tool_name": named / max(1, tool_items), "call_or_not": called / len(examples)}


def build_router(n: int = 4000, seeds: Sequence[int] = (0, 1, 2), c: float = 10.0) -> ToolRouter:
    """From `n` training conversations per seed; `c`: inverse L2 strength."""
    from tools.registry import get_registry

    texts: list[str] = []
    labels: list[str] = []
    for seed in seeds:
        more = labelled_requests(build_examples(list(get_registry()), n, "train", seed))
        texts += more[0]
        labels += more[1]
    return ToolRouter.from_texts(texts, labels, c=c)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the tool router from training data.")
    parser.add_argument(
        "--n", type=int, default=4000, help="training conversations to build per seed"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the training split"
    )
    parser.add_argument(
        "--c", type=float, default=10.0, help="inverse L2 strength of the logistic regression"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="also score the router alone on validation seeds 0 and 1 (300 conversations each)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=BUNDLED_ADAPTER_DIR / ROUTER_FILE,
        help="where to write the router (next to the adapter it serves)",
    )
    args = parser.parse_args(argv)
    router = build_router(args.n, args.seeds, args.c)
    print(router.save(args.out), f"{len(router.tools)} labels, from {args.n} x {len(args.seeds)}")
    if args.check:
        from tools.registry import get_registry

        for seed in (0, 1):
            examples = build_examples(list(get_registry()), 300, "validation", seed)
            scores = router_accuracy(router, examples)
            print(f"validation seed {seed}:", {k: round(v, 3) for k, v in scores.items()})


if __name__ == "__main__":
    main()
