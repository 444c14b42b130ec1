"""Tool calls decoded under a grammar made from the registry, for the embedded model.

A 270M model writing a call freely spends ~35 tokens and can misspell a tool or an
argument. Here the model only decides where there is a real choice: once it opens
`<tool_call>`, the text is built from *choice points*, each a small set of complete
continuation strings (the tool name with the JSON glue after it; an argument key; a
handle, enum or boolean value together with what follows it). Each set is tokenized
into a token trie: where the trie has one branch the token is forced (forced tokens
are fed to the model in one batch), and where it branches the model scores only the
branch tokens (a few rows of the LM head instead of 262k). Only free-text values
(an index name, a topic, a file name) and numbers are generated token by token.

The output is the canonical call text of `agent.brains.parsing.format_tool_call`,
so the parser and the loop see exactly what a well-trained model would write, and a
name or a key outside the registry cannot be produced.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tools.registry import ToolSpec

CALL_OPEN = '<tool_call>{"name":'
MAX_FREE_VALUE_TOKENS = 12
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_NUMBER_PREFIX = re.compile(r"-?\d*\.?\d*")


class TokenModel(Protocol):
    """What the decoder needs from a model: queue tokens, score a few, pick any."""

    def push(self, token_ids: Sequence[int]) -> None:
        """Queue tokens as generated; they reach the model on the next score call."""

    def score(self, token_ids: Sequence[int]) -> list[float]:
        """Logits of the given next tokens after everything pushed so far."""

    def argmax(self) -> int:
        """The greedy next token over the free-text vocabulary."""


Tokenize = Callable[[str], list[int]]
Detokenize = Callable[[Sequence[int]], str]


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    value: str | None = None  # the candidate that ends here
    under: list[str] = field(default_factory=list)  # candidates through this node


class TokenTrie:
    """Candidate strings by their token sequences; candidates must be prefix-free."""

    def __init__(self, candidates: Sequence[str], tokenize: Tokenize) -> None:
        if not candidates:
            raise ValueError("a choice needs at least one candidate")
        self.root = _Node()
        for text in candidates:
            node = self.root
            node.under.append(text)
            for token in tokenize(text):
                node = node.children.setdefault(token, _Node())
                node.under.append(text)
            node.value = text

    def walk(
        self,
        model: TokenModel,
        bias: dict[int, float] | None = None,
        prior: dict[str, float] | None = None,
        weight: float = 1.0,
    ) -> str:
        """Push the tokens of the candidate the model prefers; return its text.
        `bias` is subtracted from the scores of the tokens it names. `prior` (a
        probability per candidate) is added as `weight * log P(branch | node)` to the
        model's log-probabilities at each branch, a product of experts over candidates."""
        node = self.root
        while True:
            if node.value is not None and not node.children:
                return node.value
            options = list(node.children)
            if node.value is not None or len(options) > 1:
                if node.value is not None:  # a candidate that is a prefix of another
                    return node.value
                scores = model.score(options)
                if bias:
                    scores = [s - bias.get(t, 0.0) for s, t in zip(scores, options, strict=True)]
                if prior:
                    scores = _with_prior(scores, [node.children[t] for t in options], prior, weight)
                token = options[max(range(len(options)), key=scores.__getitem__)]
            else:
                token = options[0]
            model.push([token])
            node = node.children[token]


def _with_prior(
    scores: list[float], branches: list[_Node], prior: dict[str, float], weight: float
) -> list[float]:
    top = max(scores)
    log_norm = top + math.log(sum(math.exp(s - top) for s in scores))
    masses = [max(sum(prior.get(v, 0.0) for v in b.under), 1e-9) for b in branches]
    log_total = math.log(sum(masses))
    return [
        s - log_norm + weight * (math.log(m) - log_total)
        for s, m in zip(scores, masses, strict=True)
    ]


@dataclass(frozen=True)
class _Arg:
    name: str
    required: bool
    choices: tuple[str, ...] | None  # JSON texts of allowed values; None: free value
    kind: str  # "choice", "string", "string_list" (one free string) or "number"
    needs: tuple[str, ...] = ()  # required once this one is given (dependentRequired)
    bounds: tuple[float | None, float | None] = (None, None)  # a number's minimum, maximum


def _handles_from(
    description: str, scenes: Sequence[str], results: Sequence[str]
) -> list[str] | None:
    """The session's handles a field described as a handle can take; None for other fields."""
    text = description.lower()
    if not text.startswith("handle"):
        return None
    return list(results) if "result" in text.split(",")[0] else list(scenes)


def call_arguments(spec: ToolSpec, scenes: Sequence[str], results: Sequence[str]) -> list[_Arg]:
    """The arguments of `spec` as the grammar offers them, from its JSON schema:
    enums and booleans are choices, handle fields choose among the session's handles
    (scenes, or results for a field described as a result's handle; left out when the
    session has none of that kind, not offered as free text), lists of handles
    choose among one or two distinct handles. Object-valued arguments are left out
    (their defaults apply). An argument listed in the schema's `dependentRequired`
    carries the arguments it makes required."""
    schema = spec.parameters_schema()
    required = set(schema.get("required", []))
    dependent = schema.get("dependentRequired", {})
    args: list[_Arg] = []
    for name, prop in schema.get("properties", {}).items():
        options = [p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]
        main = options[0] if options else {}
        kind = main.get("type")
        handles = _handles_from(prop.get("description", ""), scenes, results)
        if handles == []:
            continue  # the session has no handle of this kind: nothing valid to give
        choices: list[Any] | None = None
        if "enum" in main:
            choices = list(main["enum"])
        elif kind == "boolean":
            choices = [True, False]
        elif kind == "string" and handles:
            choices = handles
        elif kind == "array" and handles:
            most = min(int(main.get("maxItems", 2)), 2, len(handles))
            choices = [[h] for h in handles]
            if most >= 2:
                choices += [[a, b] for a in handles for b in handles if a != b]
        elif kind == "array" and main.get("items", {}).get("type") == "string":
            args.append(_Arg(name, name in required, None, "string_list"))
            continue
        elif kind not in ("string", "number", "integer"):
            continue  # objects: not offered
        if choices is not None:
            texts = tuple(json.dumps(c, ensure_ascii=False) for c in choices)
            args.append(_Arg(name, name in required, texts, "choice"))
        else:
            free_kind = "string" if kind == "string" else "number"
            bounds = (main.get("minimum"), main.get("maximum"))
            args.append(_Arg(name, name in required, None, free_kind, bounds=bounds))
    offered = {a.name for a in args}
    return [
        replace(a, needs=tuple(n for n in dependent.get(a.name, ()) if n in offered)) for a in args
    ]


@functools.cache
def _required_handle_fields(spec: ToolSpec) -> tuple[str, ...]:
    """Descriptions of the required arguments that take a handle (schema built once)."""
    schema = spec.parameters_schema()
    texts = [
        schema["properties"][name].get("description", "") for name in schema.get("required", [])
    ]
    return tuple(t for t in texts if t.lower().startswith("handle"))


def servable(spec: ToolSpec, scenes: Sequence[str], results: Sequence[str]) -> bool:
    """False when a required argument must name a handle the session does not have
    (export or zonal_stats before any result exists): such a call cannot succeed."""
    return all(_handles_from(t, scenes, results) for t in _required_handle_fields(spec))


class CallDecoder:
    """Decodes one tool call for a set of tools, for the handles of a session."""

    def __init__(self, tokenize: Tokenize, detokenize: Detokenize) -> None:
        self.tokenize = tokenize
        self.detokenize = detokenize
        self._tries: dict[tuple[str, ...], TokenTrie] = {}

    def _choose(
        self,
        model: TokenModel,
        candidates: Sequence[str],
        bias: dict[int, float] | None = None,
        prior: dict[str, float] | None = None,
        weight: float = 1.0,
    ) -> str:
        key = tuple(candidates)
        if key not in self._tries:
            self._tries[key] = TokenTrie(key, self.tokenize)
        return self._tries[key].walk(model, bias, prior, weight)

    def name_tokens(self, tools: Sequence[ToolSpec]) -> list[int]:
        """The tokens where tool names part ways (to score a name prior over)."""
        tokens: set[int] = set()
        for spec in tools:
            ids = self.tokenize(f' "{spec.name}", "arguments":')
            tokens.update(ids[1:3])
        return sorted(tokens)

    def decode(
        self,
        model: TokenModel,
        tools: Sequence[ToolSpec],
        *,
        scenes: Sequence[str] = (),
        results: Sequence[str] = (),
        name_prior: dict[int, float] | None = None,
        tool_prior: dict[str, float] | None = None,
        prior_weight: float = 1.0,
    ) -> str:
        """The call's text after `<tool_call>{"name":`, through `}}`. The caller has
        pushed the opening text already; only `servable` tools are offered.
        `name_prior`: logits of the name tokens after a content-free request,
        subtracted so that the few-shot examples' names do not win by default
        (contextual calibration, Zhao et al. 2021). `tool_prior`: P(tool) from the
        request (`agent.brains.router`), weighted by `prior_weight` where names part."""
        by_name = {spec.name: spec for spec in tools if servable(spec, scenes, results)} or {
            spec.name: spec for spec in tools
        }
        names = {f' "{name}", "arguments":': name for name in by_name}
        prior = None
        if tool_prior:
            prior = {text: tool_prior.get(name, 0.0) for text, name in names.items()}
        name_text = self._choose(model, list(names), name_prior, prior, prior_weight)
        name = name_text.split('"')[1]
        args = call_arguments(by_name[name], scenes, results)
        given: set[str] = set()
        text = name_text
        piece = self._choose(model, _glues(args, given, opened=False))
        while True:
            text += piece
            if piece.endswith("}"):
                return text
            arg = next(a for a in args if piece.endswith(f'"{a.name}":'))
            given.add(arg.name)
            glues = _glues(args, given, opened=True)
            if arg.choices is not None:
                # a value and the glue after it in one choice: '"],' is one token
                piece = self._choose(model, [f" {c}{g}" for c in arg.choices for g in glues])
                continue
            value = self._free_value(model, arg)
            text += _within(arg, value)
            close = {"string": '"', "string_list": '"]'}.get(arg.kind, "")
            piece = self._choose(model, [close + g for g in glues])

    def _free_value(self, model: TokenModel, arg: _Arg) -> str:
        """Greedy tokens up to the value's end (a quote for a string; anything not a
        number for a number). Everything returned has been pushed; the closing quote
        has not."""
        opening = {"string": ' "', "string_list": ' ["'}.get(arg.kind, " ")
        model.push(self.tokenize(opening))
        produced: list[int] = []
        value = ""
        for _ in range(MAX_FREE_VALUE_TOKENS):
            token = model.argmax()
            text = self.detokenize([*produced, token])
            if arg.kind != "number" and ('"' in text or "\n" in text):
                value = text.split('"')[0].split("\n")[0]
                break
            if arg.kind == "number" and not _NUMBER_PREFIX.fullmatch(text.strip()):
                match = _NUMBER.match(text.strip())
                value = match.group(0) if match else ""
                if not value:
                    value = "0"
                    model.push(self.tokenize("0"))
                    return opening + value
                break
            produced.append(token)
            model.push([token])
            value = text
        consumed = self.detokenize(produced)
        if value.startswith(consumed) and len(value) > len(consumed):
            model.push(self.tokenize(value[len(consumed) :]))
        if arg.kind != "number":
            return opening + value.replace("\\", "\\\\")
        return opening + value.strip()


def _within(arg: _Arg, value: str) -> str:
    """A number moved into the schema's inclusive bounds (a threshold of 2 where the
    field allows 0-1 becomes 1), so that the Args model accepts the call."""
    low, high = arg.bounds
    if arg.kind != "number":
        return value
    try:
        number = float(value)
    except ValueError:  # not a number ("-" when the token budget ran out): left as written
        return value
    if low is not None and number < low:
        return f" {low:g}"
    if high is not None and number > high:
        return f" {high:g}"
    return value


def _glues(args: Sequence[_Arg], given: set[str], *, opened: bool) -> list[str]:
    """What may follow: another argument's key, or the end of the call once every
    required argument is given, and every argument a given one needs."""
    lead = ", " if opened else " {"
    glues = [f'{lead}"{a.name}":' for a in args if a.name not in given]
    needed = {a.name for a in args if a.required}
    needed.update(n for a in args if a.name in given for n in a.needs)
    if needed <= given:
        glues.append("}}" if opened else " {}}")
    return glues
