"""The training options as the training and schedule forms show them: each field once,
with its help, range and default, marked with the recipes that read it and the
modalities it applies to, so the page shows only the chosen recipe's fields for the
chosen modality (static/recipe_fields.js hides and disables the others, which are then
not sent). Read from the one declaration, models.training_options; nothing here lists
an option."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from models.recipes import RECIPES
from models.training_options import OPTIONS, Option

INITIAL_RECIPE = "probe"  # what a new form starts with: the shipped models' recipe


@dataclass(frozen=True)
class Field:
    option: Option
    label: str
    text: str  # the value shown: the given one, else the default
    default: str  # the default, as a reader should see it
    recipes: str  # space-separated; empty: every recipe
    modalities: str  # space-separated; empty: every modality

    @property
    def name(self) -> str:
        return self.option.name

    def shown_for(self, recipe: str) -> bool:
        return self.option.used_by(recipe)


def _label(option: Option) -> str:
    return option.name.replace("_", " ").capitalize()


def _default_text(option: Option) -> str:
    if option.zero and option.default == 0:
        return option.zero
    if option.kind in ("sizes", "names") and not option.default:
        return "none"
    return option.format(option.default)


def _value_text(option: Option, values: Mapping) -> str:
    """A submitted form's text as it was, a stored config's value formatted, else the
    default (an input size of 0, the backbone's own, shows empty)."""
    value = values.get(option.name)
    if value is None or value == "":
        value = option.default
        if option.zero and value == 0:
            return ""
    return value if isinstance(value, str) else option.format(value)


def training_fields(values: Mapping | None = None) -> list[Field]:
    """Every public option but the recipe itself, in declaration order."""
    values = values or {}
    return [
        Field(
            o,
            _label(o),
            _value_text(o, values),
            _default_text(o),
            " ".join(o.recipes),
            " ".join(o.modalities),
        )  # fmt: skip
        for o in OPTIONS.values()
        if o.public and o.name != "recipe"
    ]


def recipe_choices() -> list[tuple[str, str]]:
    """(name, help) of every recipe, for the recipe select."""
    return [(r.name, r.help) for r in RECIPES.values()]


def chosen_recipe(values: Mapping | None) -> str:
    recipe = (values or {}).get("recipe") or INITIAL_RECIPE
    return recipe if recipe in RECIPES else INITIAL_RECIPE
