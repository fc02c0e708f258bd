"""Recipes: lookup, sections, type-checked overrides and errors that suggest the right key."""

from __future__ import annotations

import pytest
import toytask
import yaml

from formerkit.train.recipe import RECIPES_DIR, list_recipes, load_recipe, recipe_path


@pytest.fixture
def recipe_file(tmp_path):
    return toytask.write_recipe(tmp_path / "toy.yaml")


def test_load_file_and_sections(recipe_file):
    recipe = load_recipe(recipe_file)
    assert recipe.name == "toy"
    assert recipe.model == {"name": "toy-lm", "n_layers": 2}
    assert isinstance(recipe.data, toytask.ToyData) and recipe.data.n_train == 64
    assert recipe.task_name == "toy-seq" and isinstance(recipe.task, toytask.ToyTaskConfig)
    assert recipe.trainer.max_steps == 6 and recipe.trainer.lr == 0.01
    assert recipe.raw["trainer"]["schedule"] == "cosine"  # defaults are written out


def test_overrides_are_parsed_and_typed(recipe_file):
    recipe = load_recipe(recipe_file, ["trainer.max_steps=200", "trainer.lr=1", "model.d_model=32",
                                       "trainer.grad_clip=null", "trainer.compile=true",
                                       "data.n_val=5", "task.note=123", "model.preset=wide"])
    assert recipe.trainer.max_steps == 200
    assert recipe.trainer.lr == 1.0 and isinstance(recipe.trainer.lr, float)
    assert recipe.trainer.grad_clip is None and recipe.trainer.compile is True
    assert recipe.model["d_model"] == 32 and recipe.model["preset"] == "wide"
    assert recipe.data.n_val == 5 and recipe.task.note == "123"


def test_exponent_floats_without_a_dot(recipe_file):
    # PyYAML (YAML 1.1) reads `2e-3` as a string; float fields still accept it.
    recipe = load_recipe(recipe_file, ["trainer.lr=2e-3", "trainer.weight_decay=1E-2"])
    assert recipe.trainer.lr == 0.002 and recipe.trainer.weight_decay == 0.01


def test_python_overrides(recipe_file):
    recipe = load_recipe(recipe_file, trainer={"max_steps": 3}, trainer__lr=0.5,
                         **{"model.n_heads": 4})
    assert (recipe.trainer.max_steps, recipe.trainer.lr, recipe.model["n_heads"]) == (3, 0.5, 4)


def test_dict_recipe(recipe_file):
    raw = yaml.safe_load(recipe_file.read_text())
    raw["name"] = "mine"
    recipe = load_recipe(raw, ["trainer.seed=3"])
    assert recipe.name == "mine" and recipe.trainer.seed == 3


@pytest.mark.parametrize("override, message", [
    ("trainer.max_stepz=3", "unknown key trainer.max_stepz; did you mean 'max_steps'?"),
    ("model.d_modle=8", "unknown key model.d_modle; did you mean 'd_model'?"),
    ("data.n_trian=8", "unknown key data.n_trian; did you mean 'n_train'?"),
    ("task.metrc=loss", "unknown key task.metrc; did you mean 'metric'?"),
    ("trainr.lr=1", "unknown section 'trainr'; did you mean 'trainer'?"),
    ("trainer.lr=fast", "trainer.lr must be a number, got 'fast'"),
    ("trainer.max_steps=2.5", "trainer.max_steps must be"),
    ("trainer.compile=maybe", "trainer.compile must be true or false"),
    ("trainer.schedule=cosin", "schedule must be one of"),
    ("model.n_heads=3", "n_heads"),
    ("model.preset=huge", "no preset 'huge'"),
    ("model.name=gtp", "unknown model 'gtp'"),
    ("task.name=nope", "unknown task 'nope'"),
    ("trainer.max_steps", "must look like section.key=value"),
])
def test_bad_overrides_name_the_key(recipe_file, override, message):
    with pytest.raises(ValueError) as err:
        load_recipe(recipe_file, [override])
    assert message in str(err.value), str(err.value)


def test_unknown_recipe_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown recipe 'no-such-recipe'"):
        load_recipe("no-such-recipe")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_recipe(tmp_path / "missing.yaml")


def test_unknown_section_and_bad_yaml(tmp_path, recipe_file):
    raw = yaml.safe_load(recipe_file.read_text())
    raw["trianer"] = {}
    with pytest.raises(ValueError, match="did you mean 'trainer'"):
        load_recipe(raw)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_recipe(bad)


def test_shipped_recipes_have_descriptions():
    recipes = list_recipes()
    for name, description in recipes.items():
        assert description and not description.startswith("(unreadable"), name
        raw = yaml.safe_load((RECIPES_DIR / f"{name}.yaml").read_text())
        assert {"model", "task", "trainer"} <= set(raw), name
        assert recipe_path(name) == RECIPES_DIR / f"{name}.yaml"
