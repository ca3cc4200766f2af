"""Every training option, declared once: name, type, default, range or choices, help,
and which recipes use it. `TrainConfig` (what a run is given), the web's parser
(web.training), `scanq train`'s options (cli.main) and `python -m models.train` are
all generated from `OPTIONS`; the number of progress steps a run reports comes from
its recipe (models.recipes).

Imports no TensorFlow (the web process and the CLI read it). To add an option, add an
`Option` below; `recipes=("probe",)` if only that recipe reads it (a request that sets
it for another recipe is refused), `modalities=("xray",)` if only those modalities may
set it, `public=False` if only `python -m models.train` and library calls may set it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, make_dataclass

from models.backbones import BACKBONES, PROBE_POOLS
from models.recipes import RECIPES

TRUE = {"1", "true", "yes", "on"}
FALSE = {"", "0", "false", "no", "off"}
KINDS = ("int", "float", "bool", "text", "names", "choice", "sizes")


class OptionError(ValueError):
    """A value an option refuses; `name` is the option's (the API's error code is
    bad_<name>)."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


@dataclass(frozen=True)
class Option:
    name: str
    kind: str  # one of KINDS
    default: object
    help: str
    low: float | None = None  # numbers, and each size of a "sizes" option
    high: float | None = None
    # A number 0 that is allowed outside [low, high], and what it means ("none").
    zero: str = ""
    choices: tuple[str, ...] = ()
    # The choice stored as None (weights: "none" is no pretrained weights).
    none_choice: str = ""
    max_items: int = 0  # "sizes": at most this many
    recipes: tuple[str, ...] = ()  # the recipes that read it; () every recipe
    modalities: tuple[str, ...] = ()  # the modalities it may be set for; () every one
    public: bool = True  # settable from the web and `scanq train`, not only the script

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def used_by(self, recipe: str) -> bool:
        return not self.recipes or recipe in self.recipes

    def allowed_for(self, modality: str) -> bool:
        return not self.modalities or modality in self.modalities

    def describe(self, with_choices: bool = True) -> str:
        """The help with the accepted values, as a form or --help shows it."""
        if self.kind in ("int", "float"):
            span = f"{self._num(self.low)} to {self._num(self.high)}"
            only = f"; {', '.join(self.modalities)} only" if self.modalities else ""
            return f"{self.help} ({span}" + (f"; 0: {self.zero}" if self.zero else "") + only + ")"
        if self.kind == "choice" and with_choices:
            return f"{self.help} ({', '.join(self.choices)})"
        if self.kind == "sizes":
            return f"{self.help} (up to {self.max_items}, {self.low:g} to {self.high:g} px)"
        return self.help

    def _num(self, bound: float) -> str:
        return str(int(bound)) if self.kind == "int" else f"{bound:g}"

    def parse(self, raw: str):
        """The value of a form field or command-line word; the default when empty.
        OptionError says what is wrong."""
        text = raw.strip()
        if self.kind == "bool":
            if text.lower() not in TRUE | FALSE:
                raise OptionError(self.name, f"{self.name} must be true or false")
            return text.lower() in TRUE if text else self.default
        if text == "":
            return self.default
        if self.kind in ("int", "float"):
            return self._number(text)
        if self.kind == "choice":
            value = text.lower()
            if value not in self.choices:
                raise OptionError(
                    self.name, f"{self.name} must be one of {', '.join(self.choices)}"
                )
            return None if value == self.none_choice else value
        if self.kind == "sizes":
            return self._sizes(text)
        if self.kind == "names":
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return text

    def format(self, value) -> str:
        """The form field text that parses back to `value` (an edit shows it)."""
        if self.kind == "bool":
            return "true" if value else "false"
        if self.kind in ("sizes", "names"):
            return ",".join(str(item) for item in value or ())
        if value is None:
            return self.none_choice
        return f"{value:g}" if self.kind == "float" else str(value)

    def _number(self, text: str):
        kind = int if self.kind == "int" else float
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise OptionError(self.name, f"{self.name} must be {what}") from None
        if self.zero and value == 0:
            return value
        if not self.low <= value <= self.high:
            span = f"between {self._num(self.low)} and {self._num(self.high)}"
            raise OptionError(
                self.name,
                f"{self.name} must be " + (f"0 ({self.zero}) or {span}" if self.zero else span),
            )
        return value

    def sizes_error(self) -> OptionError:
        return OptionError(
            self.name,
            f"{self.name} must be up to {self.max_items} comma-separated sizes from "
            f"{self.low:g} to {self.high:g} px, each different from input_size and from "
            "each other",
        )

    def _sizes(self, text: str) -> tuple[int, ...]:
        try:
            sizes = tuple(int(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise self.sizes_error() from None
        fits = all(self.low <= s <= self.high for s in sizes) and len(set(sizes)) == len(sizes)
        if len(sizes) > self.max_items or not fits:
            raise self.sizes_error()
        return sizes


FINETUNE = ("finetune",)
PROBE = ("probe",)
IMAGES = ("finetune", "probe")  # the recipes that fit a network to images
XRAY = ("xray",)  # the lung segmenter is trained on chest X-rays (models.lung)
SIZE = {"low": 32, "high": 512}

OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        Option("recipe", "choice", "finetune", "how the model is fitted: " + "; ".join(
               f"{r.name}, {r.help}" for r in RECIPES.values()), choices=tuple(RECIPES)),
        Option("backbone", "choice", "efficientnet_lite0", "the network",
               choices=tuple(BACKBONES), recipes=IMAGES),
        Option("input_size", "int", 0, "pixels the model sees", zero="the backbone's own",
               recipes=IMAGES, **SIZE),
        Option("weights", "choice", "auto", "backbone start: ImageNet weights where present, "
               "or random", choices=("auto", "none"), none_choice="none", recipes=IMAGES),
        Option("equalize", "bool", False, "per-image histogram equalisation inside the model",
               recipes=IMAGES),
        Option("seed", "int", 0, "random seed of the split and the fit", low=0, high=2**31 - 1),
        Option("target_sensitivity", "float", 0.9, "sensitivity the threshold is chosen for "
               "on validation", low=0.5, high=0.999),
        Option("epochs", "int", 30, "head-only epochs", low=1, high=500, recipes=FINETUNE),
        Option("finetune_epochs", "int", 15, "fine-tuning epochs", low=0, high=500,
               recipes=FINETUNE),
        Option("batch_size", "int", 16, "images per step", low=1, high=512, recipes=FINETUNE),
        Option("learning_rate", "float", 1e-3, "head learning rate", low=1e-6, high=1.0,
               recipes=FINETUNE),
        Option("finetune_learning_rate", "float", 1e-4, "fine-tuning learning rate",
               low=1e-7, high=1.0, recipes=FINETUNE),
        Option("dropout", "float", 0.3, "dropout before the head", low=0.0, high=0.9,
               recipes=FINETUNE),
        Option("patience", "int", 6, "epochs without a better validation AUC before stopping",
               low=1, high=100, recipes=FINETUNE),
        Option("hflip", "bool", False, "left-right flip augmentation", recipes=FINETUNE),
        Option("finetune_from", "text", "", "first layer (name prefix) fine-tuned; empty: "
               "the backbone's top stage", recipes=FINETUNE, public=False),
        Option("crop", "float", 0.0, "fraction cut from each edge inside the model",
               low=0.0, high=0.4, recipes=IMAGES, public=False),
        Option("lung_crop", "float", 0.0, "cut each image to its lungs' box (the shipped lung "
               "segmenter's) widened by this fraction of the side, in training and scoring",
               low=0.01, high=0.3, zero="whole images", recipes=IMAGES, modalities=XRAY),
        Option("probe_c", "float", 0.0, "the probe's inverse L2 strength", low=0.0, high=100.0,
               zero="chosen on validation", recipes=PROBE),
        Option("probe_pool", "choice", "avg", "probe features: spatial means, or means and "
               "spreads", choices=PROBE_POOLS, recipes=PROBE),
        Option("probe_scales", "sizes", (), "further sizes the probe also pools at, "
               "comma-separated (e.g. 288)", max_items=3, recipes=PROBE, **SIZE),
        Option("probe_imagenet_view", "int", 0, "size of an extra unequalised, ImageNet-scaled "
               "view", zero="none", recipes=PROBE, **SIZE),
        Option("probe_layers", "names", (), "layers the probe pools; empty: the backbone's own",
               recipes=PROBE, public=False),
        Option("probe_refit", "bool", True, "refit the probe on training + validation once C "
               "is chosen", recipes=PROBE, public=False),
    )
}  # fmt: skip

_PYTHON_TYPES = {"int": int, "float": float, "bool": bool, "text": str, "choice": str,
                 "names": tuple[str, ...], "sizes": tuple[int, ...]}  # fmt: skip


def options_for(recipe: str, public_only: bool = True) -> list[Option]:
    """The options a recipe reads, in declaration order (with `.default` and
    `.describe()`): what a form shows once the recipe is chosen."""
    return [o for o in OPTIONS.values() if o.used_by(recipe) and (o.public or not public_only)]


def _post_init(self) -> None:
    """input_size 0 is the backbone's own; sequences stored as lists (JSON) are tuples."""
    if not self.input_size:
        self.input_size = BACKBONES[self.backbone].default_size
    self.probe_scales = tuple(self.probe_scales)
    self.probe_layers = tuple(self.probe_layers)


TrainConfig = make_dataclass(
    "TrainConfig",
    [
        ("modality", str),
        *((o.name, _PYTHON_TYPES[o.kind], field(default=o.default)) for o in OPTIONS.values()),
        ("extra", dict, field(default_factory=dict)),
    ],
    namespace={
        "__post_init__": _post_init,
        "__doc__": "Settings of one training run: the modality and every option of OPTIONS "
        "(models.training_options), with their defaults.",
    },
)
TrainConfig.__module__ = __name__


def defaults() -> dict:
    """Every option's default, as a config dict (input_size left 0: the backbone's)."""
    return {name: o.default for name, o in OPTIONS.items()}


def parse_fields(
    form: Mapping[str, str], names: Iterable[str] | None = None, modality: str | None = None
) -> dict:
    """A complete, checked training config from text fields (a form, a request, a
    stored schedule's fields): absent fields take their defaults; OptionError names the
    first bad one. Only public options are read unless `names` says which; `modality`,
    when known, refuses options set for a modality they do not apply to."""
    names = list(names) if names is not None else [o.name for o in OPTIONS.values() if o.public]
    config = defaults()
    for name in names:
        config[name] = OPTIONS[name].parse(str(form.get(name) or ""))
    given = [n for n in names if (form.get(n) or "") != ""]
    return check_config(config, given=given, modality=modality)


def check_config(
    config: dict, given: Iterable[str] | None = None, modality: str | None = None
) -> dict:
    """The rules between options: input_size 0 resolved to the backbone's own; probe
    scales differ from the input size; an option the recipe does not read, or one set
    for a `modality` it does not apply to, is refused when set to anything but its
    default (`given`: the options the caller set)."""
    recipe = config["recipe"]
    given = list(given) if given is not None else None
    for name in given if given is not None else config:
        option = OPTIONS.get(name)
        if option and not option.used_by(recipe) and config[name] != option.default:
            only = " or ".join(f"recipe={r}" for r in option.recipes)
            raise OptionError(name, f"{name} applies to {only} only")
    if modality is not None:
        check_modality(config, modality, given)
    if not config["input_size"]:
        config["input_size"] = BACKBONES[config["backbone"]].default_size
    scales = tuple(config.get("probe_scales") or ())
    if config["input_size"] in scales:
        raise OPTIONS["probe_scales"].sizes_error()
    return config


def check_modality(config: Mapping, modality: str, given: Iterable[str] | None = None) -> None:
    """OptionError for an option set (to anything but its default) for a modality it
    does not apply to (`given`: the options the caller set; None: all of `config`)."""
    for name in given if given is not None else config:
        option = OPTIONS.get(name)
        if option and config[name] != option.default and not option.allowed_for(modality):
            only = " or ".join(f"modality={m}" for m in option.modalities)
            raise OptionError(name, f"{name} applies to {only} only, not {modality}")


def as_fields(config: Mapping) -> dict[str, str]:
    """A stored config as the text fields that parse back to it."""
    return {name: OPTIONS[name].format(value) for name, value in config.items() if name in OPTIONS}


def expected_steps(config: Mapping) -> int:
    """How many progress steps a run reports (its recipe's count); jobs show "step n of
    at most N"."""
    full = {**defaults(), **config}
    return RECIPES[full["recipe"]].steps(full)
