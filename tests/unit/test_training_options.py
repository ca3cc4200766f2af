"""The one declaration of training options is what TrainConfig, the web parser,
`scanq train` and `python -m models.train` are made of."""

import dataclasses

import pytest

from cli.main import train as train_command
from models.recipes import RECIPES
from models.train import _add_argument
from models.training_options import (
    OPTIONS,
    OptionError,
    TrainConfig,
    as_fields,
    expected_steps,
    options_for,
    parse_fields,
)


def test_train_config_has_every_option_with_its_default():
    config = TrainConfig(modality="ct")
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    assert names == ["modality", *OPTIONS, "extra"]
    for name, option in OPTIONS.items():
        if name != "input_size":  # 0: the backbone's own size
            assert getattr(config, name) == option.default, name
    assert config.input_size == 224  # efficientnet_lite0's
    assert TrainConfig(modality="ct", backbone="smallcnn").input_size == 128


def test_every_option_names_known_recipes_and_round_trips_through_text():
    for option in OPTIONS.values():
        assert set(option.recipes) <= set(RECIPES), option.name
        assert option.parse(option.format(option.default)) == option.default, option.name
    config = parse_fields({"recipe": "probe", "input_size": "352", "probe_scales": "288",
                           "weights": "none", "equalize": "true"})  # fmt: skip
    assert parse_fields(as_fields(config)) == config
    assert config["weights"] is None and config["probe_scales"] == (288,)


def test_rules_between_options():
    with pytest.raises(OptionError, match="applies to recipe=probe only") as caught:
        parse_fields({"probe_scales": "288"})
    assert caught.value.name == "probe_scales"
    with pytest.raises(OptionError, match="applies to recipe=finetune only"):
        parse_fields({"recipe": "probe", "epochs": "3"})
    parse_fields({"recipe": "probe", "epochs": "30"})  # a form sending the default is fine
    with pytest.raises(OptionError) as caught:
        parse_fields({"recipe": "probe", "input_size": "288", "probe_scales": "288"})
    assert caught.value.name == "probe_scales"
    assert parse_fields({"backbone": "smallcnn"})["input_size"] == 128


def test_a_form_lists_the_fields_of_the_chosen_recipe():
    probe = [o.name for o in options_for("probe")]
    assert "probe_scales" in probe and "epochs" not in probe and "backbone" in probe
    assert "finetune_from" not in [o.name for o in options_for("finetune")]  # not public
    assert expected_steps({"recipe": "probe"}) == 4 and expected_steps({}) == 45
    assert expected_steps({"recipe": "probe", "probe_c": 0.1}) == 1


def test_the_command_line_and_the_script_take_every_option():
    flags = {p.name for p in train_command.params}
    assert {o.name for o in OPTIONS.values() if o.public} <= flags
    import argparse

    ap = argparse.ArgumentParser()
    for option in OPTIONS.values():
        _add_argument(ap, option)
    args = vars(ap.parse_args(["--recipe", "probe", "--probe-scales", "288,320", "--equalize"]))
    assert args == {"recipe": "probe", "probe_scales": (288, 320), "equalize": True}
