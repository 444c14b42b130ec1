"""A transformers vision-language model as the brain (LLaVA 1.5, GeoChat converted to the
transformers format, the Qwen2-VL family, any image-text-to-text model).

The model loads lazily, on the first answer, from a local folder or a hub id
(`EOAGENT_HF_MODEL`); on CUDA it can load in 4-bit NF4 (bitsandbytes) and a LoRA adapter
(`EOAGENT_ADAPTER_PATH`, peft) can sit on top. The conversation's images go through the
model's own processor; the prompt is the model's chat template when the processor has
one, else the project's text prompt with the image token before each image's message.
Decoding is greedy; tokens stream to `on_token` as they come, tool-call blocks held back.
"""

from __future__ import annotations

import base64
import io
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.brains.base import BrainError, TokenCallback
from agent.brains.parsing import OPEN_TAG, format_tool_call
from agent.brains.text import TOOL_FORMAT, TextBrain

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

    from agent.settings import Settings
    from tools.registry import ToolSpec

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
# Modules left out of 4-bit: transformers 5 reads these as regexes anchored at the start
# of a module's name (or as suffixes); older releases as substrings, hence both forms.
_UNQUANTIZED = [
    *(
        f"{prefix}{name}"
        for name in ("vision_tower", "multi_modal_projector", "visual")
        for prefix in ("", ".*")
    ),
    "lm_head",
]
_INSTALL = "pip install 'eoagent[gpu]'"


class HFBrain(TextBrain):
    """A transformers image-text-to-text model behind the Brain protocol."""

    name = "hf"
    accepts_images = True

    def __init__(
        self,
        model: str | Path,
        *,
        adapter_path: str | Path | None = None,
        load_in_4bit: bool = False,
        device: str = "auto",
        max_new_tokens: int = 256,
        max_images: int = 2,
    ) -> None:
        self.model_ref = str(model)
        self.adapter_path = Path(adapter_path).expanduser() if adapter_path else None
        self.load_in_4bit = load_in_4bit
        self.device_setting = device
        self.max_new_tokens = max_new_tokens
        # LLaVA 1.5 and GeoChat were trained on one image per conversation; a pre/post pair
        # is the most a change question needs. Older images drop out, newest kept.
        self.max_images = max_images
        self._processor: Any = None
        self._model: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> HFBrain:
        if not settings.hf_model:
            raise BrainError(
                "The hf backend needs a model: set EOAGENT_HF_MODEL to a local folder or a "
                "hub id of a transformers image-text-to-text model (LLaVA, Qwen2-VL)."
            )
        import importlib.util

        missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
        if missing:
            raise BrainError(
                f"The hf backend needs {' and '.join(missing)} ({_INSTALL}); or choose another "
                "EOAGENT_BACKEND."
            )
        return cls(
            settings.hf_model,
            adapter_path=settings.adapter_path,
            load_in_4bit=settings.load_in_4bit,
            device=settings.device,
            max_new_tokens=getattr(settings, "hf_max_new_tokens", 256),
        )

    # -- loading -------------------------------------------------------------------

    @property
    def device(self) -> str:
        import torch

        if self.device_setting != "auto":
            return self.device_setting
        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def processor(self) -> Any:
        if self._processor is None:
            self._processor = self._load_processor()
        return self._processor

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = self._load_model()
        return self._model

    def _source(self) -> str:
        """The model folder, or the hub id; a path that does not exist is an error here
        rather than a confusing hub lookup later."""
        ref = self.model_ref
        path = Path(ref).expanduser()
        if path.is_dir():
            return str(path)
        if path.exists() or not _HUB_ID.match(ref) or ref.startswith((".", "~", "/")):
            raise BrainError(
                f"EOAGENT_HF_MODEL={ref!r} is not a model folder; set it to a folder holding "
                "config.json and the weights, or to a hub id such as llava-hf/llava-1.5-7b-hf."
            )
        return ref

    def _load_processor(self) -> Any:
        from transformers import AutoConfig, AutoProcessor

        source = self._source()
        try:
            config = AutoConfig.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise BrainError(
                f"Could not read the model config of EOAGENT_HF_MODEL={self.model_ref!r} "
                f"({_first_line(exc)}); set it to a local folder with the model."
            ) from exc
        if "LlavaLlamaForCausalLM" in (getattr(config, "architectures", None) or []) or hasattr(
            config, "mm_vision_tower"
        ):
            raise BrainError(
                f"EOAGENT_HF_MODEL={self.model_ref!r} is in the original LLaVA repository "
                "format (GeoChat ships so); convert it with transformers' "
                "convert_llava_weights_to_hf.py and point EOAGENT_HF_MODEL at the result."
            )
        if _model_class(config) is None:
            raise BrainError(
                f"EOAGENT_HF_MODEL={self.model_ref!r} is a {config.model_type!r} model, not an "
                "image-text-to-text one; set it to a vision-language model (LLaVA, Qwen2-VL)."
            )
        try:
            processor = AutoProcessor.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise BrainError(
                f"Could not load the processor of EOAGENT_HF_MODEL={self.model_ref!r} "
                f"({_first_line(exc)}); the folder needs its processor and tokenizer files."
            ) from exc
        if getattr(processor, "image_processor", None) is None:
            raise BrainError(
                f"EOAGENT_HF_MODEL={self.model_ref!r} has no image processor; set it to a "
                "vision-language model (LLaVA, Qwen2-VL)."
            )
        return processor

    def _load_model(self) -> Any:
        import torch
        from transformers import AutoConfig

        self.processor  # noqa: B018 -- checks the folder is a vision-language model first
        source = self._source()
        model_class = _model_class(AutoConfig.from_pretrained(source))
        device = self.device
        if device == "cuda" and not torch.cuda.is_available():
            raise BrainError(
                "EOAGENT_DEVICE=cuda but torch sees no CUDA device; set EOAGENT_DEVICE=auto."
            )
        kwargs: dict[str, Any] = {}
        if self.load_in_4bit:
            kwargs["quantization_config"] = self._quantization_config(device)
            kwargs["device_map"] = {"": device if device != "cuda" else 0}
            kwargs["dtype"] = torch.bfloat16 if device == "cuda" else torch.float32
        elif device == "cuda":
            kwargs["dtype"] = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            kwargs["dtype"] = torch.float32
        try:
            model = model_class.from_pretrained(source, **kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            raise BrainError(
                f"Could not load EOAGENT_HF_MODEL={self.model_ref!r} ({_first_line(exc)})."
            ) from exc
        if not self.load_in_4bit:
            model = model.to(device)
        if self.adapter_path is not None:
            model = self._with_adapter(model)
        model.eval()
        return model

    def _quantization_config(self, device: str) -> Any:
        import torch

        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError as exc:
            raise BrainError(
                f"EOAGENT_LOAD_IN_4BIT needs bitsandbytes ({_INSTALL}); or set "
                "EOAGENT_LOAD_IN_4BIT=false."
            ) from exc
        if device not in ("cuda", "cpu"):
            raise BrainError(
                f"4-bit loading runs on CUDA (or CPU), not {device!r}; set "
                "EOAGENT_LOAD_IN_4BIT=false or EOAGENT_DEVICE=cuda."
            )
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16 if device == "cuda" else torch.float32,
            # The vision tower and projector stay in full precision, as LLaVA's QLoRA
            # recipe keeps them: they are small and quantising them costs accuracy.
            llm_int8_skip_modules=_UNQUANTIZED,
        )

    def _with_adapter(self, model: Any) -> Any:
        assert self.adapter_path is not None
        if not (self.adapter_path / "adapter_config.json").is_file():
            raise BrainError(
                f"EOAGENT_ADAPTER_PATH={str(self.adapter_path)!r} holds no LoRA adapter "
                "(adapter_config.json); set it to a folder saved by peft, or unset it."
            )
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise BrainError(f"EOAGENT_ADAPTER_PATH needs peft ({_INSTALL}); or unset it.") from exc
        try:
            with warnings.catch_warnings():
                # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`.
                warnings.filterwarnings(
                    "ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning
                )
                return PeftModel.from_pretrained(model, str(self.adapter_path))
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise BrainError(
                f"The adapter at EOAGENT_ADAPTER_PATH={str(self.adapter_path)!r} does not fit "
                f"EOAGENT_HF_MODEL={self.model_ref!r} ({_first_line(exc)})."
            ) from exc

    # -- prompting -----------------------------------------------------------------

    @property
    def image_token(self) -> str:
        return str(getattr(self.processor, "image_token", None) or "<image>")

    def render(
        self, messages: Sequence[BaseMessage], tools: Sequence[ToolSpec]
    ) -> tuple[str, list[str]]:
        """The model's chat template applied to the conversation when it has one, else
        the project's text prompt; either way with one image marker per image kept."""
        kept = _keep_newest_images(messages, self.max_images)
        if getattr(self.processor, "chat_template", None):
            try:
                return self._render_chat(kept, tools)
            except Exception:  # a template that rejects this shape: the text prompt serves
                pass
        marked = [_with_image_markers(m, self.image_token) for m in kept]
        return super().render(marked, tools)

    def _render_chat(
        self, messages: Sequence[BaseMessage], tools: Sequence[ToolSpec]
    ) -> tuple[str, list[str]]:
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

        from agent.brains.text import _image_urls
        from tools.adapters import tool_catalogue_text
        from tools.registry import Registry

        registry = Registry()
        for spec in tools:
            registry.register(spec)
        chat: list[dict[str, Any]] = []
        images: list[str] = []

        def add(role: str, parts: list[dict[str, Any]]) -> None:
            # Many VLM templates demand alternating roles: same-role turns are merged.
            if chat and chat[-1]["role"] == role:
                chat[-1]["content"] += [{"type": "text", "text": "\n\n"}, *parts]
            else:
                chat.append({"role": role, "content": parts})

        for message in messages:
            if isinstance(message, SystemMessage):
                text = (
                    f"{message.text}\n\n### Tools\n{tool_catalogue_text(registry)}\n\n{TOOL_FORMAT}"
                )
                add("system", [{"type": "text", "text": text}])
            elif isinstance(message, HumanMessage):
                urls = _image_urls(message.content)
                images += urls
                add("user", [{"type": "image"} for _ in urls] + [_text(message.text)])
            elif isinstance(message, AIMessage):
                calls = "\n".join(
                    format_tool_call(c["name"], c["args"]) for c in message.tool_calls
                )
                add("assistant", [_text(f"{message.text}\n{calls}".strip())])
            elif isinstance(message, ToolMessage):
                add("user", [_text(f"### Tool {message.name or ''}\n{message.text}")])
        try:
            prompt = self.processor.apply_chat_template(
                chat, add_generation_prompt=True, tokenize=False
            )
        except Exception:
            if not chat or chat[0]["role"] != "system":
                raise
            # Templates without a system role (LLaVA 1.5): the system text opens the
            # first user turn instead.
            system, rest = chat[0], chat[1:]
            if rest and rest[0]["role"] == "user":
                rest[0]["content"] = [*system["content"], _text("\n\n"), *rest[0]["content"]]
            else:
                rest.insert(0, {"role": "user", "content": system["content"]})
            prompt = self.processor.apply_chat_template(
                rest, add_generation_prompt=True, tokenize=False
            )
        return str(prompt), images

    def prepare_inputs(self, prompt: str, images: Sequence[str] = ()) -> Any:
        """The processor's tensors for `prompt` and the images (data URLs or paths), on
        the model's device: image markers expanded to the model's image tokens."""
        pil_images = [_open_image(url) for url in images]
        try:
            inputs = self.processor(
                text=[prompt], images=pil_images or None, truncation=False, return_tensors="pt"
            )
        except (ValueError, TypeError) as exc:
            raise BrainError(
                f"The processor of EOAGENT_HF_MODEL={self.model_ref!r} refused the prompt "
                f"and {len(pil_images)} image(s): {_first_line(exc)}"
            ) from exc
        inputs.pop("token_type_ids", None)
        return inputs

    # -- generation ----------------------------------------------------------------

    def generate(
        self, prompt: str, *, images: Sequence[str] = (), on_token: TokenCallback | None = None
    ) -> str:
        import torch

        model = self.model
        inputs = self.prepare_inputs(prompt, images).to(model.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(_float_dtype(model))
        tokenizer = self.processor.tokenizer
        prompt_len = inputs["input_ids"].shape[1]
        streamer = _CallbackStreamer(tokenizer, on_token, self.stop) if on_token else None
        try:
            with torch.inference_mode():
                output = model.generate(
                    **inputs,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    streamer=streamer,
                    stopping_criteria=[_StopOnText(tokenizer, self.stop, prompt_len)],
                    pad_token_id=_pad_id(tokenizer),
                )
        except torch.OutOfMemoryError as exc:
            raise BrainError(
                "The hf model ran out of GPU memory; set EOAGENT_LOAD_IN_4BIT=true or use a "
                "smaller EOAGENT_HF_MODEL."
            ) from exc
        text = tokenizer.decode(output[0, prompt_len:], skip_special_tokens=True)
        completion = _cut_at_stop(str(text), self.stop)
        if streamer is not None:
            streamer.finish(completion)
        return completion


def from_settings(settings: Settings) -> HFBrain:
    """The entry point `agent.brains.make_brain` calls for EOAGENT_BACKEND=hf."""
    return HFBrain.from_settings(settings)


# -- helpers -------------------------------------------------------------------------


def _model_class(config: Any) -> Any:
    """The transformers class that loads `config` as an image-text-to-text model, or
    None when it is not one."""
    from transformers import AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    model_type = getattr(config, "model_type", "")
    if model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return AutoModelForImageTextToText
    if "llava" in model_type:
        from transformers import LlavaForConditionalGeneration

        return LlavaForConditionalGeneration
    return None


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def _keep_newest_images(messages: Sequence[BaseMessage], limit: int) -> list[BaseMessage]:
    """The messages with only the newest `limit` image parts left in them."""
    from langchain_core.messages import HumanMessage

    kept: list[BaseMessage] = []
    budget = limit
    for message in reversed(messages):
        if isinstance(message, HumanMessage) and isinstance(message.content, list):
            parts: list[Any] = []
            for part in reversed(message.content):
                if isinstance(part, dict) and part.get("type") == "image_url":
                    if budget <= 0:
                        continue
                    budget -= 1
                parts.append(part)
            if len(parts) != len(message.content):
                message = message.model_copy(update={"content": parts[::-1]})
        kept.append(message)
    return kept[::-1]


def _with_image_markers(message: BaseMessage, token: str) -> BaseMessage:
    """A HumanMessage whose text opens with one image token per attached image (LLaVA's
    own layout: ``<image>\\nquestion``)."""
    from langchain_core.messages import HumanMessage

    from agent.brains.text import _image_urls

    if not isinstance(message, HumanMessage):
        return message
    count = len(_image_urls(message.content))
    if not count:
        return message
    text = (token + "\n") * count + message.text
    assert isinstance(message.content, list)
    images = [p for p in message.content if isinstance(p, dict) and p.get("type") == "image_url"]
    return message.model_copy(update={"content": [{"type": "text", "text": text}, *images]})


def _open_image(url: str) -> Any:
    """A PIL RGB image from a data URL, a file:// URL or a path."""
    from PIL import Image, UnidentifiedImageError

    try:
        if url.startswith("data:"):
            _, _, payload = url.partition(",")
            data = io.BytesIO(base64.b64decode(payload))
            return Image.open(data).convert("RGB")
        if url.startswith(("http://", "https://")):
            raise BrainError(
                "The hf brain reads images attached as data URLs or files, not web URLs; "
                "load the scene into the session instead."
            )
        path = url.removeprefix("file://")
        return Image.open(path).convert("RGB")
    except (OSError, ValueError, UnidentifiedImageError) as exc:
        raise BrainError(f"An attached image could not be read ({_first_line(exc)}).") from exc


def _float_dtype(model: Any) -> Any:
    import torch

    for param in model.parameters():
        if param.is_floating_point() and param.dtype != torch.uint8:
            return param.dtype
    return torch.float32


def _pad_id(tokenizer: Any) -> int | None:
    pad = getattr(tokenizer, "pad_token_id", None)
    return pad if pad is not None else getattr(tokenizer, "eos_token_id", None)


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


class _StopOnText:
    """Stops generation once the new text holds one of the stop strings (decoding the
    tail is tokenizer-agnostic, unlike token-level stop lists)."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_len: int) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.prompt_len = prompt_len

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        new = input_ids[0, self.prompt_len :][-48:]
        tail = self.tokenizer.decode(new, skip_special_tokens=True)
        done = any(stop in tail for stop in self.stops)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class _CallbackStreamer:
    """Feeds decoded answer text to a callback while generation runs. Text from a
    `<tool_call>` tag on, and any stop string, is held back (the tag's JSON is not answer
    text); a tail that could still become a tag or stop string waits for more tokens."""

    def __init__(self, tokenizer: Any, callback: TokenCallback, stops: Sequence[str]) -> None:
        from transformers import TextStreamer

        self.callback = callback
        self.guards = (OPEN_TAG, *stops)
        self.sent = 0
        self.text = ""
        self.closed = False
        outer = self

        class _Streamer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                outer._feed(text)

        self._inner = _Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

    def put(self, value: Any) -> None:
        self._inner.put(value)

    def end(self) -> None:
        self._inner.end()

    def _feed(self, text: str) -> None:
        if self.closed:
            return
        self.text += text
        cut = min((i for i in (self.text.find(g) for g in self.guards) if i >= 0), default=-1)
        if cut >= 0:
            self._emit(self.text[:cut])
            self.closed = True
            return
        safe = len(self.text) - _partial_guard(self.text, self.guards)
        self._emit(self.text[:safe])

    def _emit(self, upto: str) -> None:
        if len(upto) > self.sent:
            chunk, self.sent = upto[self.sent :], len(upto)
            self.callback(chunk)

    def finish(self, completion: str) -> None:
        """Sends what generation left held back, up to the first tool call."""
        if not self.closed:
            cut = completion.find(OPEN_TAG)
            self._emit(completion[: cut if cut >= 0 else len(completion)])
        self.closed = True


def _partial_guard(text: str, guards: Sequence[str]) -> int:
    """Length of the longest end of `text` that begins one of `guards`."""
    longest = 0
    for guard in guards:
        for n in range(min(len(guard) - 1, len(text)), 0, -1):
            if text.endswith(guard[:n]):
                longest = max(longest, n)
                break
    return longest
