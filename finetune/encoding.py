"""Conversations as the `local` brain's token ids, with labels on assistant tokens.

The prompt comes from `LocalBrain.segments` itself (fixed prefix, session line, the
messages as the brain renders them), each segment tokenized on its own as the brain
does. An assistant step is spelled with the tokens inference produces:

- a tool call: `<tool_call>{"name":` and then exactly the tokens the constrained
  decoder (`agent.brains.constrained.CallDecoder`) pushes when it writes that call,
  found by running the real decoder against a teacher that only ever prefers the
  target text (`_Teacher`); then `</tool_call>`;
- text: the tokens of the text, then the `\\n\\n` that stops free decoding.

The fixed prefix (system text, tool lines, few-shot examples; ~800 tokens) is the
same in every example, so it is returned apart: the trainer computes its keys and
values once and trains on the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.brains.constrained import CALL_OPEN, CallDecoder
from agent.brains.local import LocalBrain, _Holdings
from agent.brains.parsing import CLOSE_TAG, format_tool_call
from finetune.data import Example, to_messages

if TYPE_CHECKING:
    from tools.registry import ToolSpec

IGNORE = -100


@dataclass
class Encoded:
    """`prefix` ids (BOS + fixed prefix), the rest's `ids`, and `labels` aligned with
    `ids` (IGNORE where no loss)."""

    prefix: list[int]
    ids: list[int]
    labels: list[int]
    exact: bool  # every call was spelled through the constrained decoder


class _Teacher:
    """A TokenModel that prefers whatever continues `target` (the call text after
    CALL_OPEN); what the decoder pushes is what inference would feed the model."""

    def __init__(self, target: str, encode: Any, decode: Any) -> None:
        self.target = target
        self.encode = encode
        self.decode = decode
        self.pushed: list[int] = []

    def push(self, token_ids: Sequence[int]) -> None:
        self.pushed.extend(int(t) for t in token_ids)

    def score(self, token_ids: Sequence[int]) -> list[float]:
        scores = []
        for token in token_ids:
            text = self.decode([*self.pushed, token])
            scores.append(float(len(text)) if self.target.startswith(text) else -1.0)
        return scores

    def argmax(self) -> int:
        done = self.decode(self.pushed)
        rest = self.target[len(done) :] if self.target.startswith(done) else self.target
        ids = self.encode(rest)
        return ids[0] if ids else 0


class LocalEncoder:
    """Token ids of conversations for the local brain, with a given tokenizer."""

    def __init__(self, tokenizer: Any, tools: Sequence[ToolSpec], system_prompt: str) -> None:
        self.tokenizer = tokenizer
        self.tools = list(tools)
        self.system_prompt = system_prompt
        # LocalBrain.segments reads nothing from the instance: render with a bare one.
        self._renderer = object.__new__(LocalBrain)
        self.decoder = CallDecoder(self.encode, self.decode)
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = list(self.tokenizer(text, add_special_tokens=False).input_ids)
            if len(self._cache) < 50000:
                self._cache[text] = ids
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def call_tokens(
        self, name: str, args: dict[str, Any], holdings: _Holdings
    ) -> tuple[list[int], bool]:
        """The tokens of one call as the constrained decoder writes it (and whether
        the decoder could write it; if not, the plain tokenization)."""
        text = format_tool_call(name, args)
        body = text[len(CALL_OPEN) : -len(CLOSE_TAG)]
        teacher = _Teacher(body, self.encode, self.decode)
        try:
            written = self.decoder.decode(
                teacher,
                self.tools,
                scenes=[h for h, _ in holdings.scenes],
                results=holdings.results,
            )
        except (StopIteration, KeyError, IndexError, ValueError):
            written = None
        if written == body:
            return self.encode(CALL_OPEN) + teacher.pushed + self.encode(CLOSE_TAG), True
        return self.encode(text), False

    def encode_example(self, example: Example, *, train_answers: bool = True) -> Encoded:
        """The whole conversation; loss on every assistant step (answers after tool
        results too, unless `train_answers` is False)."""
        messages = to_messages(example, self.system_prompt)
        segments, holdings = self._renderer.segments(messages, self.tools)
        prefix = [self.tokenizer.bos_token_id, *self.encode(segments[0])]
        ids: list[int] = []
        labels: list[int] = []
        exact = True
        assistant = "### Assistant\n"
        rows = example.messages
        parts = segments[2:-1]  # the messages' sections, without the open assistant one
        head = self.encode(segments[1])
        ids += head
        labels += [IGNORE] * len(head)
        for i, (row, part) in enumerate(zip(rows, parts, strict=True)):
            if row["role"] != "assistant":
                piece = self.encode(part)
                ids += piece
                labels += [IGNORE] * len(piece)
                continue
            opening = self.encode(assistant)
            if row.get("tool_calls"):
                _, step_holdings = self._renderer.segments(
                    to_messages(example, self.system_prompt, upto=i), self.tools
                )
                call = row["tool_calls"][0]
                body, ok = self.call_tokens(call["name"], call["args"], step_holdings)
                exact &= ok
            else:
                body = self.encode(row["content"].strip())
            close = self.encode("\n\n")
            trained = train_answers or not _after_tool(rows, i)
            ids += opening + body + close
            labels += [IGNORE] * len(opening)
            labels += (body + close) if trained else [IGNORE] * (len(body) + len(close))
        del holdings
        return Encoded(prefix, ids, labels, exact)


def _after_tool(rows: Sequence[dict[str, Any]], i: int) -> bool:
    return i > 0 and rows[i - 1]["role"] == "tool"
