"""Config dataclasses: validation names the field; dict round trip; unknown-key suggestions."""

import dataclasses

import pytest

from formerkit.config import (
    ConfigBase,
    check_choice,
    check_divisible,
    check_positive,
    check_probability,
)


@dataclasses.dataclass
class ToyConfig(ConfigBase):
    d_model: int = 8
    n_heads: int = 2
    dropout: float = 0.1
    activation: str = "relu"

    def validate(self) -> None:
        check_positive(self, "d_model", "n_heads")
        check_divisible(self, "d_model", "n_heads")
        check_probability(self, "dropout")
        check_choice(self, "activation", ("relu", "gelu"))


@pytest.mark.parametrize("changes, field", [
    ({"d_model": 10, "n_heads": 3}, "d_model=10 must be divisible by n_heads=3"),
    ({"dropout": 1.0}, "dropout"),
    ({"dropout": -0.1}, "dropout"),
    ({"d_model": 0}, "d_model must be positive"),
    ({"n_heads": -2}, "n_heads must be positive"),
    ({"activation": "tanh"}, "activation"),
])
def test_invalid_values_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        ToyConfig(**changes)


def test_round_trip_and_unknown_keys():
    config = ToyConfig(d_model=16, n_heads=4)
    assert ToyConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="did you mean 'n_heads'"):
        ToyConfig.from_dict({"n_head": 4})
    with pytest.raises(ValueError, match="divisible"):
        config.replace(n_heads=5)


def test_field_types_and_nan_are_checked_for_every_config():
    import math

    from formerkit import BertConfig, GPTConfig
    from formerkit.train.config import TrainerConfig

    with pytest.raises(ValueError, match="GPTConfig.n_layers must be an integer, got 1.5"):
        GPTConfig(n_layers=1.5)
    with pytest.raises(ValueError, match="GPTConfig.layer_norm_eps must be a number, got nan"):
        GPTConfig(layer_norm_eps=math.nan)
    with pytest.raises(ValueError, match="BertConfig.pad_token_id must be an integer, got .0."):
        BertConfig(pad_token_id="0")
    with pytest.raises(ValueError, match="TrainerConfig.lr must be a number, got nan"):
        TrainerConfig(lr=math.nan)
    with pytest.raises(ValueError, match="TrainerConfig.compile must be true or false"):
        TrainerConfig(compile="yes")
    assert GPTConfig(layer_norm_eps=1).layer_norm_eps == 1  # an int is a number
