"""The table of training recipes: name -> how to fit, and how many progress steps a
run reports. `models.train` looks the configured recipe up here; no other module
branches on a recipe's name.

To add a recipe: write its fit (the `FitFn` signature, returning a `models.fitting.
Fitted`) in a module of its own, add a `Recipe` below, and declare any option of its own
in `models.training_options` with `recipes=("<name>",)`.
Importing this module imports no TensorFlow: fits import it when they run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from models.finetune import fit_finetune
from models.fitting import Fitted
from models.probe import C_GRID, fit_probe
from models.recalibrate import fit_refused

# fit(cfg, x_train, y_train, x_val, y_val, progress=None, should_stop=None) -> Fitted,
# with `cfg` a models.training_options.TrainConfig (models.finetune, models.probe).
FitFn = Callable[..., Fitted]


@dataclass(frozen=True)
class Recipe:
    name: str
    help: str
    fit: FitFn
    # At most how many progress steps a run of this recipe reports (jobs show "step n
    # of at most N"), from a training config (a dict of option values).
    steps: Callable[[Mapping], int]
    # False for a recipe that trains on no labelled image set (its job takes none).
    needs_dataset: bool = True


def _finetune_steps(config: Mapping) -> int:
    return int(config["epochs"]) + int(config["finetune_epochs"])


def _probe_steps(config: Mapping) -> int:
    return 1 if config["probe_c"] else len(C_GRID)


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "finetune",
            "head on a frozen backbone, then its top stage fine-tuned",
            fit_finetune,
            _finetune_steps,
        ),
        Recipe(
            "probe",
            "linear model on frozen pooled features (fast; what the shipped models use)",
            fit_probe,
            _probe_steps,
        ),
        Recipe(
            "recalibrate",
            "the active version's weights, its temperature and threshold refitted on this "
            "site's confirmed labels (no images; worker.recalibration)",
            fit_refused,
            lambda config: 1,
            needs_dataset=False,
        ),
    )
}


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`, or ValueError naming the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}: {' or '.join(RECIPES)}") from None
