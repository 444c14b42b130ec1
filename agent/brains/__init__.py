"""Brains: one module per backend, all speaking `agent.brains.base.Brain`.

`make_brain(settings)` builds the configured one, importing only that backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.brains.base import Brain, BrainError

if TYPE_CHECKING:
    from agent.settings import Settings

__all__ = ["Brain", "BrainError", "make_brain"]


def make_brain(settings: Settings, *, task_id: str | None = None) -> Brain:
    """The brain `settings.backend` names. `task_id` picks a scripted plan per task."""
    if settings.backend == "scripted":
        from agent.brains.scripted import ScriptedBrain

        if settings.script_path is None:
            raise BrainError("The scripted backend needs a plan file; set EOAGENT_SCRIPT_PATH.")
        return ScriptedBrain.from_file(settings.script_path, task_id=task_id)
    if settings.backend == "openai":
        from agent.brains.openai import OpenAIBrain

        return OpenAIBrain.from_settings(settings)
    module_name = {"local": "agent.brains.local", "hf": "agent.brains.hf"}[settings.backend]
    try:
        import importlib

        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise BrainError(
                f"The {settings.backend} backend needs the package '{exc.name}'; install it "
                f"(pip install 'eoagent[gpu]') or choose another EOAGENT_BACKEND."
            ) from exc
        raise BrainError(
            f"The {settings.backend} backend is not available in this version; use "
            "EOAGENT_BACKEND=openai (with a server) or scripted."
        ) from exc
    brain: Brain = module.from_settings(settings)
    return brain
