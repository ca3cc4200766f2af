"""`scanq train`'s training options, generated from models.training_options: one flag
per public option, checked here as the server checks it, and sent as the form fields
the API parses. Only the flags given are sent; the server fills in the defaults."""

from __future__ import annotations

from collections.abc import Callable

import click

from models.training_options import OPTIONS, Option, OptionError


class _OptionType(click.ParamType):
    """A flag's value parsed by its option, so a bad one fails before any upload."""

    def __init__(self, option: Option):
        self.option = option
        self.name = option.kind

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return self.option.parse(value)
        except OptionError as exc:
            self.fail(str(exc), param, ctx)


def _flag(option: Option) -> Callable:
    default = option.format(option.default) or "none"
    help_text = f"{option.describe(with_choices=False)} [default: {default}]"
    if option.recipes:
        help_text += f" (recipe {'/'.join(option.recipes)})"
    if option.kind == "bool":
        return click.option(f"{option.flag}/--no-{option.flag[2:]}", option.name,
                            default=None, help=help_text)  # fmt: skip
    if option.kind == "choice":
        kind = click.Choice(option.choices, case_sensitive=False)
        return click.option(option.flag, option.name, type=kind, default=None, help=help_text)
    return click.option(option.flag, option.name, type=_OptionType(option), default=None,
                        help=help_text)  # fmt: skip


def training_options(command: Callable) -> Callable:
    """Add every public training option to a click command (as keyword arguments)."""
    for option in reversed([o for o in OPTIONS.values() if o.public]):
        command = _flag(option)(command)
    return command


def as_fields(values: dict) -> dict[str, str]:
    """The form fields of the flags that were given."""
    return {
        name: OPTIONS[name].format(value) if not isinstance(value, str) else value
        for name, value in values.items()
        if name in OPTIONS and value is not None
    }
