"""Declare each setting once: a dataclass field with its default, help text, CLI flag and validation.

A stage config is a frozen, keyword-only dataclass whose fields are made with ``setting()``.
Everything else is derived from those declarations: the typer options of every command that
takes the config (``options_for``), validation before any work starts (``validate``, called by
each config's ``__post_init__``), the Makefile variables (checked by a test) and ``qdllm key``.
This module imports no typer until a CLI asks for options, so configs stay light.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import typing
from dataclasses import dataclass
from typing import Any, Callable, Optional

from pipeline.errors import QdllmError


@dataclass(frozen=True)
class Spec:
    """How one setting is shown and checked; stored in the field's metadata."""

    help: str
    flag: str
    short: str | None = None
    choices: tuple[Any, ...] | None = None
    ge: float | None = None  # value >= ge
    gt: float | None = None  # value > gt
    le: float | None = None  # value <= le
    parse: Callable[[str], Any] | None = None  # CLI text -> value (e.g. a list of seeds)
    show: Callable[[Any], str] | None = None  # value -> CLI text (the default shown in --help)
    check: Callable[[Any, Any], str | None] | None = None  # (value, config) -> error sentence or None


def setting(default: Any, help: str, *, flag: str | None = None, **spec: Any) -> Any:
    """A config field declared once: default, help, flag (default ``--field-name``) and rules."""
    meta = {"qdllm": dict(help=help, flag=flag, **spec)}
    return dataclasses.field(default=default, metadata=meta)


def specs(cls: type) -> dict[str, Spec]:
    """Field name -> Spec of every declared setting of a config class."""
    out = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("qdllm")
        if meta is not None:
            out[f.name] = Spec(**{**meta, "flag": meta["flag"] or "--" + f.name.replace("_", "-")})
    return out


def _rule(spec: Spec) -> str:
    if spec.choices is not None:
        return "one of " + ", ".join(map(str, spec.choices))
    def num(v: float) -> str:
        return str(v) if isinstance(v, int) else f"{v:g}"

    parts = []
    if spec.gt is not None:
        parts.append(f"> {num(spec.gt)}")
    if spec.ge is not None:
        parts.append(f">= {num(spec.ge)}")
    if spec.le is not None:
        parts.append(f"<= {num(spec.le)}")
    return " and ".join(parts)


def validate(cfg: Any) -> None:
    """Check every declared setting of ``cfg``; the first violation becomes one ``QdllmError`` sentence."""
    for name, spec in specs(type(cfg)).items():
        value = getattr(cfg, name)
        if value is None:  # an unset optional (e.g. filled in from a profile later)
            continue
        numbers = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            shown = spec.show(value) if spec.show else value
            raise QdllmError(f"{spec.flag} {shown!r} is not a finite number; give a finite value"
                             + (f" ({_rule(spec)})." if _rule(spec) else "."))
        bad = (spec.choices is not None and value not in spec.choices) or (
            not isinstance(value, (str, tuple)) and (
                (spec.gt is not None and not value > spec.gt)
                or (spec.ge is not None and not value >= spec.ge)
                or (spec.le is not None and not value <= spec.le)))
        if bad:
            shown = spec.show(value) if spec.show else value
            if spec.choices is not None:
                what = spec.flag.lstrip("-").replace("-", " ")
                raise QdllmError(f"Unknown {what} {shown!r} ({spec.flag}): use {_rule(spec)}.")
            raise QdllmError(f"{spec.flag} {shown!r} is not valid: it must be {_rule(spec)}.")
        if spec.check is not None and (msg := spec.check(value, cfg)):
            raise QdllmError(msg)
        if isinstance(value, float) and value == 0.0:  # -0.0 is 0.0: one spelling, one key
            object.__setattr__(cfg, name, 0.0)


# ------------------------------------------------------------------ CLI options derived from the declarations


def _cli_type(tp: Any) -> Any:
    """The typer type of a field: ``int | None`` -> Optional[int]; tuples travel as text and are parsed."""
    args = typing.get_args(tp)
    if type(None) in args:
        inner = [a for a in args if a is not type(None)][0]
        return Optional[_cli_type(inner)]
    if typing.get_origin(tp) is tuple:
        return str
    return tp


@dataclass(frozen=True)
class Option:
    """One CLI option, fed to the fields of one or more config classes (e.g. ``--seed`` feeds data and teacher)."""

    param: str
    spec: Spec
    default: Any
    type: Any
    targets: tuple[tuple[type, str], ...]


def options_for(*classes: type, exclude: tuple[str, ...] = ()) -> list[Option]:
    """The CLI options of the given config classes; a flag shared by two classes must share its default."""
    by_flag: dict[str, Option] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, spec in specs(cls).items():
            if spec.flag in exclude:
                continue
            default = fields[name].default
            if spec.show is not None and default is not None:
                default = spec.show(default)
            if spec.flag in by_flag:
                prev = by_flag[spec.flag]
                if prev.default != default:
                    raise TypeError(f"{spec.flag} is declared twice with different defaults")
                by_flag[spec.flag] = dataclasses.replace(prev, targets=prev.targets + ((cls, name),))
                continue
            param = spec.flag.split("/")[0].lstrip("-").replace("-", "_")  # "--on/--off" for booleans
            by_flag[spec.flag] = Option(param, spec, default, _cli_type(hints[name]), ((cls, name),))
    return list(by_flag.values())


def configs_from(options: list[Option], values: dict[str, Any], classes: tuple[type, ...],
                 fixed: dict[type, dict[str, Any]] | None = None) -> list[Any]:
    """Build one config per class from parsed CLI values (plus ``fixed`` field values per class)."""
    kwargs: dict[type, dict[str, Any]] = {cls: dict((fixed or {}).get(cls, {})) for cls in classes}
    for opt in options:
        value = values[opt.param]
        if value is not None and opt.spec.parse is not None:
            value = opt.spec.parse(value)
        for cls, name in opt.targets:
            kwargs[cls][name] = value
    return [cls(**kwargs[cls]) for cls in classes]


def with_settings(fixed: dict[type, dict[str, Any]] | None = None, exclude: tuple[str, ...] = (),
                  **sections: type) -> Callable:
    """Decorate a typer command so it takes one option per setting of each config class and receives the configs.

    ``@with_settings(data=DataConfig, teacher=TeacherConfig)`` on ``def cmd(data, teacher, remote: ... = None)``
    gives ``cmd`` every data and teacher option; its own parameters (``remote``) stay as written.
    """
    names, classes = tuple(sections), tuple(sections.values())

    def deco(fn: Callable) -> Callable:
        import typer

        opts = options_for(*classes, exclude=exclude)
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name not in names]
        generated = [
            inspect.Parameter(o.param, inspect.Parameter.KEYWORD_ONLY, annotation=o.type,
                              default=typer.Option(o.default, o.spec.flag, *([o.spec.short] if o.spec.short else []),
                                                   help=o.spec.help, show_default=o.default is not None))
            for o in opts
        ]
        clash = {p.name for p in own} & {p.name for p in generated}
        if clash:
            raise TypeError(f"{fn.__name__}: parameters {clash} clash with settings")

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            # typer passes every option; a direct call may leave some out (their declared defaults apply)
            values = {o.param: kwargs.pop(o.param, o.default) for o in opts}
            configs = configs_from(opts, values, classes, fixed)
            return fn(**kwargs, **dict(zip(names, configs)))

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + generated
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # typer must see the generated signature, not fn's
        return wrapper

    return deco


def reject_options_before_subcommand(ctx: Any, honoured: tuple[str, ...] = ()) -> None:
    """Options given before a subcommand are honoured (``honoured``, passed on in ``ctx.obj``) or rejected."""
    sources = {name: ctx.get_parameter_source(name) for name in ctx.params}
    given = [name for name, src in sources.items() if src is not None and src.name not in ("DEFAULT", "DEFAULT_MAP")]
    ignored = [n for n in given if n not in honoured]
    if ignored:
        flags = ", ".join("--" + n.replace("_", "-") for n in ignored)
        raise QdllmError(f"{flags} given before `{ctx.invoked_subcommand}` would not be used by it; "
                         f"put the options after the subcommand (see `{ctx.command_path} {ctx.invoked_subcommand} --help`).")
    ctx.obj = {n: ctx.params[n] for n in honoured if n in given}
