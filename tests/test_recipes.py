"""Recipes: every shipped one validates against its command; bad ones fail with the key and the file named."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import deepprobe.options as options_module
from deepprobe.cli import app
from deepprobe.errors import DeepprobeError
from deepprobe.options import RECIPE_DIR, load_recipe, options_for, resolve

runner = CliRunner()
SHIPPED = sorted(RECIPE_DIR.glob("*.toml"))


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long error lines


def test_recipes_are_shipped():
    assert len(SHIPPED) >= 3


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_recipe_validates(path: Path):
    recipe = load_recipe(str(path))  # raises on an unknown key or a wrong type
    assert recipe.description and len(recipe.description) <= 120 and "\n" not in recipe.description
    assert recipe.options, "a recipe that sets nothing"
    root = typer.main.get_command(app)
    assert recipe.command in root.commands, f"no `deepprobe {recipe.command}` command for {path.name}"
    options_cls = options_for(recipe.command)
    resolved = resolve(options_cls, recipe.options, {}, str(path))
    defaults = options_cls()
    changed = [f.name for f in dataclasses.fields(options_cls) if getattr(resolved, f.name) != getattr(defaults, f.name)]
    assert changed, f"{path.name} only restates the defaults"
    assert load_recipe(recipe.name, recipe.command).options == recipe.options  # by name, as --recipe NAME


def _classify(examples, *args):
    return runner.invoke(app, ["classify", str(examples / "cat.jpg"), "--json", *args])


@pytest.mark.parametrize("body, words", [
    ('command = "classify"\n[options]\ntopp = 3\n', ["unknown option 'topp'", "top"]),
    ('command = "classify"\n[options]\ntop = "five"\n', ["top must be int", "'five'"]),
    ('command = "classify"\n[options]\nbatch_size = 2.5\n', ["batch_size must be int"]),
    ('command = "classify"\ncolour = "red"\n', ["unknown key 'colour'"]),
    ('command = "fool"\n[options]\nsteps = 3\n', ["recipe is for `fool`, not `classify`"]),
    ('[options]\ntop = 3\n', ["needs a `command"]),
    ('command = "classify"\n[options\ntop = 3\n', ["not valid TOML"]),
])
def test_bad_recipe_names_key_and_file(tmp_path, examples, body, words):
    path = tmp_path / "mine.toml"
    path.write_text(body)
    res = _classify(examples, "--recipe", str(path))
    text = _flat(res.output)
    assert res.exit_code == 2, text
    assert str(path) in text and all(w in text for w in words), text
    assert "Traceback" not in text


def test_unknown_recipe_name_lists_the_known_ones(examples):
    res = _classify(examples, "--recipe", "no-such-recipe")
    assert res.exit_code == 2 and "unknown recipe 'no-such-recipe'" in _flat(res.output)
    assert SHIPPED[0].stem in _flat(res.output)


def test_recipe_sets_options_and_typed_options_win(tmp_path, examples):
    path = tmp_path / "two.toml"
    path.write_text('command = "classify"\ndescription = "two classes"\n[options]\ntop = 2\nbatch_size = 1\n')
    res = _classify(examples, "--recipe", str(path), "--batch-size", "4")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert len(summary["results"][0]["top"]) == 2  # from the recipe
    assert summary["arguments"]["top"] == 2 and summary["arguments"]["batch_size"] == 4  # typed wins
    assert summary["options"] == {"top": 2, "batch_size": 4, "min_score": 0.5, "alpha": 0.5} and summary["arguments"]["recipe"] == str(path)


def test_fraction_values():
    cls = options_for("classify")
    with pytest.raises(DeepprobeError, match="top must be int"):
        resolve(cls, {"top": "1/2"}, {})
    fool = options_for("fool")
    if fool is not None and "eps" in {f.name for f in dataclasses.fields(fool)}:
        assert resolve(fool, {"eps": "0.5/255"}, {"eps": None}).eps == pytest.approx(0.5 / 255)
        assert resolve(fool, {"eps": "8/255"}, {}).eps == 8 / 255


def test_recipes_command_lists_them_and_flags_broken_ones(tmp_path, monkeypatch):
    res = runner.invoke(app, ["recipes", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["recipes"]
    assert [r["name"] for r in rows] == [p.stem for p in SHIPPED]
    assert all(r["description"] and r["command"] for r in rows)

    (tmp_path / "good.toml").write_text(SHIPPED[0].read_text())
    (tmp_path / "bad.toml").write_text('command = "classify"\ndescription = "broken"\n[options]\ntop = "x"\n')
    monkeypatch.setattr(options_module, "RECIPE_DIR", tmp_path)
    res = runner.invoke(app, ["recipes", "--json"])
    assert res.exit_code == 1  # the broken one is reported, the good one still listed
    rows = {r["name"]: r for r in json.loads(res.stdout)["recipes"]}
    assert "error" not in rows["good"] and "top must be int" in rows["bad"]["error"]
    res = runner.invoke(app, ["recipes", "good"])
    assert res.exit_code == 0 and "good" in res.output
