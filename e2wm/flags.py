"""Command-line flags from config dataclasses, as ``HfArgumentParser`` makes them from TRL's configs.

A field whose metadata has ``help`` is a flag; its default, type and help are written once, in the
dataclass. How a field's type becomes a flag:

- ``str``, ``int``, ``float`` (or ``X | None``): ``--name VALUE``;
- ``bool``: ``--name`` when it defaults to False, ``--no-name`` when it defaults to True;
- ``tuple[X, ...]``: ``--name V [V ...]``; ``tuple[int, int]``: ``--name FIRST:LAST``;
- ``dict[str, X]``: ``--name KEY=V [KEY=V ...]``;
- a nested config dataclass: its own flagged fields, named with ``metadata["prefix"]`` in front.

Metadata may also give ``choices``, ``metavar`` and ``positional`` (an argument without ``--``). A flag
is written with dashes (``--shard-size``) and takes underscores too (``--shard_size``, TRL's spelling).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any


def _pair(value_type: type, metavar: str) -> Callable[[str], tuple[str, Any]]:
    def parse(text: str) -> tuple[str, Any]:
        key, sep, value = text.partition("=")
        try:
            if not sep or not key:
                raise ValueError
            return key, value_type(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {metavar}, got {text!r}") from None

    return parse


def _range(text: str) -> tuple[int, int]:
    try:
        first, last = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FIRST:LAST, got {text!r}") from None
    return first, last


def unwrap_optional(hint: Any) -> Any:
    """``X`` of ``X | None`` (or ``Optional[X]``); any other hint as it is."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _flagged(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """(field, resolved type) of the fields of ``cls`` that are flags or nested configs."""
    hints = typing.get_type_hints(cls)
    return [
        (f, hints[f.name])
        for f in dataclasses.fields(cls)
        if "help" in f.metadata or dataclasses.is_dataclass(hints[f.name])
    ]


def add_flags(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """Add a flag to ``parser`` for every flagged field of the dataclass ``cls`` (and of nested ones)."""
    for field, hint in _flagged(cls):
        if dataclasses.is_dataclass(hint):
            add_flags(parser, hint, prefix + field.metadata.get("prefix", ""))
            continue
        dest, default, meta = prefix + field.name, _default(field), field.metadata
        kind, origin = unwrap_optional(hint), typing.get_origin(unwrap_optional(hint))
        args = typing.get_args(kind)
        options: dict[str, Any] = {"help": meta["help"]}
        for key in ("choices", "metavar"):
            if key in meta:
                options[key] = meta[key]
        if kind is bool:
            options["action"] = "store_false" if default else "store_true"
        elif origin is tuple and args[-1] is Ellipsis:
            options.update(nargs="+", type=args[0])
        elif origin is tuple:
            options.update(type=_range, metavar=meta.get("metavar", "FIRST:LAST"))
        elif origin is dict:
            metavar = meta.get("metavar", "KEY=VALUE")
            options.update(nargs="*", type=_pair(args[1], metavar), metavar=metavar)
        else:
            options["type"] = kind
        if default is dataclasses.MISSING:
            options["required"] = not meta.get("positional", False)
        else:
            options["default"] = _shown(default)
            if kind is bool and default:
                options["help"] += " (on unless this flag is given)"
            elif not (default is None or kind is bool or default in ("", (), {})):
                options["help"] += f" (default: {_text(default)})"
        if meta.get("positional", False):
            options.pop("required", None)
            parser.add_argument(dest, **options)
            continue
        name = dest.replace("_", "-")
        flag = f"--no-{name}" if kind is bool and default else f"--{name}"
        parser.add_argument(flag, dest=dest, **options)


def _shown(default: Any) -> Any:
    """The default as argparse holds it: lists for tuples, KEY=VALUE pairs for mappings."""
    if isinstance(default, dict):
        return list(default.items())
    return list(default) if isinstance(default, tuple) else default


def _text(default: Any) -> str:
    if isinstance(default, dict):
        return " ".join(f"{k}={v}" for k, v in default.items())
    if isinstance(default, (tuple, list)):
        return " ".join(str(v) for v in default)
    return str(default)


def config_from(cls: type, args: argparse.Namespace, prefix: str = "", **given: Any) -> Any:
    """An instance of ``cls`` from the parsed flags (fields without a flag keep their defaults)."""
    values = dict(given)
    for field, hint in _flagged(cls):
        if dataclasses.is_dataclass(hint):
            values[field.name] = config_from(hint, args, prefix + field.metadata.get("prefix", ""))
            continue
        value = getattr(args, prefix + field.name)
        kind = typing.get_origin(unwrap_optional(hint))
        if kind is dict:
            value = dict(value)
        elif kind is tuple and value is not None:
            value = tuple(value)
        values[field.name] = value
    return cls(**values)
