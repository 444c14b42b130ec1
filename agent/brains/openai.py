"""Any OpenAI-compatible chat server as the brain (vLLM, llama.cpp server, TGI, OpenAI).

LangChain's ChatOpenAI does the protocol: the registry's tools are bound as function
tools, images travel as `image_url` parts, and the reply's `tool_calls` come back
parsed (broken argument JSON lands in `invalid_tool_calls`, which the loop answers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agent.brains.base import BrainError, TokenCallback

if TYPE_CHECKING:
    from langchain_core.messages import AIMessage, BaseMessage

    from agent.settings import Settings
    from tools.registry import ToolSpec


class OpenAIBrain:
    """A chat-completions server; `stream=True` streams answer tokens to `on_token`."""

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "EMPTY",
        temperature: float = 0.0,
        timeout_s: float = 120.0,
        max_retries: int = 1,
        accepts_images: bool = False,
        stream: bool = True,
    ) -> None:
        from langchain_openai import ChatOpenAI

        self.accepts_images = accepts_images
        self.stream = stream
        self.model = ChatOpenAI(
            base_url=base_url,
            model=model,
            api_key=api_key,  # type: ignore[arg-type]
            temperature=temperature,
            timeout=timeout_s,
            max_retries=max_retries,
        )
        self._bound: dict[tuple[str, ...], Any] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIBrain:
        return cls(
            base_url=settings.openai_base_url,
            model=settings.openai_model,
            api_key=settings.openai_api_key.get_secret_value(),
            temperature=settings.temperature,
            timeout_s=settings.openai_timeout_s,
            max_retries=settings.openai_max_retries,
            accepts_images=settings.send_images,
        )

    def _runnable(self, tools: Sequence[ToolSpec]) -> Any:
        key = tuple(spec.name for spec in tools)
        if key not in self._bound:
            from tools.adapters import openai_tool_schema

            schemas = [openai_tool_schema(spec) for spec in tools]
            self._bound[key] = self.model.bind_tools(schemas) if schemas else self.model
        return self._bound[key]

    def respond(
        self,
        messages: Sequence[BaseMessage],
        tools: Sequence[ToolSpec],
        *,
        on_token: TokenCallback | None = None,
    ) -> AIMessage:
        from langchain_core.messages import AIMessage

        runnable = self._runnable(tools)
        try:
            if on_token is None or not self.stream:
                reply = runnable.invoke(list(messages))
            else:
                reply = None
                for chunk in runnable.stream(list(messages)):
                    if chunk.text:
                        on_token(chunk.text)
                    reply = chunk if reply is None else reply + chunk
                if reply is None:
                    raise BrainError("the server streamed no reply")
        except BrainError:
            raise
        except Exception as exc:  # openai.APIConnectionError, APIStatusError, timeouts...
            raise BrainError(
                f"the OpenAI-compatible server at {self.model.openai_api_base} failed: "
                f"{type(exc).__name__}: {exc}. Check that it is running and that "
                "EOAGENT_OPENAI_BASE_URL and EOAGENT_OPENAI_MODEL are right."
            ) from exc
        return AIMessage(
            content=reply.content,
            tool_calls=reply.tool_calls,
            invalid_tool_calls=reply.invalid_tool_calls,
            response_metadata=dict(reply.response_metadata or {}),
        )
