"""Command-line options made from a pydantic config (FinetuneConfig, EvalConfig).

Each field becomes `--field-name` with its description as help and its Literal values
as choices; booleans become `--flag/--no-flag`. `eoagent finetune` / `eoagent evaluate`
and `python -m finetune.train` / `python -m finetune.evaluate` use the same code.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

Config = TypeVar("Config", bound=BaseModel)


def _inner(annotation: Any) -> tuple[Any, bool]:
    """The type without `| None`, and whether None was allowed."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), len(args) < len(typing.get_args(annotation))
    return annotation, False


def add_config_arguments(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    for name, info in model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kind, _ = _inner(info.annotation)
        default = info.get_default(call_default_factory=True)
        help_text = f"{info.description} (default: {default})"
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif typing.get_origin(kind) is Literal:
            parser.add_argument(
                flag, choices=[str(c) for c in typing.get_args(kind)], default=None, help=help_text
            )
        else:
            convert = kind if kind in (int, float, Path) else str
            parser.add_argument(flag, type=convert, default=None, help=help_text)


def config_from_args(model: type[Config], args: argparse.Namespace) -> Config:
    """The config from parsed options; options not given keep the model's defaults."""
    given = {
        name: getattr(args, name)
        for name in model.model_fields
        if getattr(args, name, None) is not None
    }
    return model.model_validate(given)
