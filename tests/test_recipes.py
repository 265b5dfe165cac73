"""Recipes: every shipped one validates against its command; bad ones fail with the key and the file named; the
user's own folders are read and shadow bundled names; a non-editable install ships and uses them."""
from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

import deepprobe.cli.recipes as recipes_cli

from deepprobe.cli import app
from deepprobe.errors import DeepprobeError
from deepprobe.options import bundled_recipe_dir, load_recipe, options_for, resolve

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "recipes").glob("*.toml"))


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run from an empty folder with an empty config home: only the bundled recipes are found."""
    cwd, config = tmp_path / "work", tmp_path / "config"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    return cwd, config / "deepprobe" / "recipes"


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long error lines


def test_recipes_are_shipped_from_the_top_level_folder():
    assert len(SHIPPED) >= 3
    assert bundled_recipe_dir() == ROOT / "recipes"  # a source checkout reads the top-level folder
    assert not (ROOT / "deepprobe" / "recipes").exists()


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
    assert summary["options"] == {"top": 2, "batch_size": 4, "min_score": 0.5, "alpha": 0.5, "neighbors": 20,
                                  "temperature": 0.07} and summary["arguments"]["recipe"] == str(path)


def test_fraction_values():
    cls = options_for("classify")
    with pytest.raises(DeepprobeError, match="top must be int"):
        resolve(cls, {"top": "1/2"}, {})
    fool = options_for("fool")
    assert resolve(fool, {"eps": "0.5/255"}, {"eps": None}).eps == pytest.approx(0.5 / 255)
    assert resolve(fool, {"eps": "8/255"}, {}).eps == 8 / 255
    assert resolve(fool, {"eps": "8/255"}, {"eps": "4/255"}).eps == 4 / 255  # typed wins, fraction too


def test_recipes_command_lists_them_and_flags_broken_ones(elsewhere):
    cwd, _ = elsewhere
    res = runner.invoke(app, ["recipes", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["recipes"]
    assert [r["name"] for r in rows] == [p.stem for p in SHIPPED]
    assert all(r["description"] and r["command"] and r["origin"] == "bundled" for r in rows)

    (cwd / "recipes").mkdir()
    (cwd / "recipes" / "good.toml").write_text(SHIPPED[0].read_text())
    (cwd / "recipes" / "bad.toml").write_text('command = "classify"\ndescription = "broken"\n[options]\ntop = "x"\n')
    (cwd / "recipes" / "far.toml").write_text('command = "classify"\ndescription = "range"\n[options]\ntop = 0\n')
    res = runner.invoke(app, ["recipes", "--json"])
    assert res.exit_code == 1  # the broken ones are reported, the good one still listed
    rows = {r["name"]: r for r in json.loads(res.stdout)["recipes"]}
    assert "error" not in rows["good"] and "top must be int" in rows["bad"]["error"]
    assert "top must be in [1, inf), got 0" in rows["far"]["error"]  # recipes are range-checked too
    res = runner.invoke(app, ["recipes", "good"])
    assert res.exit_code == 0 and "good" in res.output


def test_user_recipes_are_found_and_shadow_bundled_ones(elsewhere, examples, monkeypatch):
    """./recipes wins over ~/.config/deepprobe/recipes, which wins over the bundled recipes; the listing says so."""
    cwd, config = elsewhere
    bundled = load_recipe("fool-l2")
    assert bundled.origin == "bundled" and bundled.path == ROOT / "recipes" / "fool-l2.toml"
    config.mkdir(parents=True)
    (config / "fool-l2.toml").write_text('command = "fool"\ndescription = "mine"\n[options]\neps = "3/255"\n')
    (config / "mine.toml").write_text('command = "classify"\ndescription = "two"\n[options]\ntop = 2\n')
    assert load_recipe("fool-l2").path == config / "fool-l2.toml" and load_recipe("fool-l2").options["eps"] == "3/255"
    (cwd / "recipes").mkdir()
    (cwd / "recipes" / "fool-l2.toml").write_text('command = "fool"\ndescription = "ours"\n[options]\neps = "1/255"\n')
    assert load_recipe("fool-l2").origin == "working directory" and load_recipe("fool-l2").options["eps"] == "1/255"

    res = runner.invoke(app, ["recipes", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    rows = {r["name"]: r for r in summary["recipes"]}
    assert [f["origin"] for f in summary["folders"]] == ["working directory", "user config", "bundled"]
    assert rows["mine"]["origin"] == "user config" and rows["fool-cw"]["origin"] == "bundled"
    assert rows["fool-l2"]["path"] == str(cwd / "recipes" / "fool-l2.toml")
    assert [h["origin"] for h in rows["fool-l2"]["shadows"]] == ["user config", "bundled"]
    wide = Console(file=io.StringIO(), width=200)
    monkeypatch.setattr(recipes_cli, "out_console", wide)
    assert runner.invoke(app, ["recipes"]).exit_code == 0
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in wide.file.getvalue().splitlines()
             if line.startswith("│")]
    where = {row[0]: row[2] for row in cells}  # name -> from
    assert where["fool-l2"] == "./recipes (shadows the user config one and the bundled one)"
    assert where["fool-cw"] == "bundled" and str(config).startswith(where["mine"])  # a long path folds

    # a named user recipe drives a run like a bundled one (classify: cheap)
    res = runner.invoke(app, ["classify", str(examples / "cat.jpg"), "--recipe", "mine", "--json"])
    assert res.exit_code == 0 and len(json.loads(res.stdout)["results"][0]["top"]) == 2


@pytest.mark.slow
def test_a_non_editable_install_ships_and_uses_the_recipes(tmp_path, examples):
    """`pip install .` (here: --target, no dependencies) puts recipes/*.toml inside the package; the installed
    deepprobe lists them and runs one, from a folder with no recipes/ of its own."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("deepprobe", "recipes"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(src)]
    if importlib.util.find_spec("setuptools"):  # build with what is installed: no index needed
        cmd += ["--no-build-isolation", "--no-index"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (site / "deepprobe" / "recipes").glob("*.toml")) == [p.name for p in SHIPPED]

    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "XDG_CONFIG_HOME": str(tmp_path / "config")}

    def deepprobe(*args):
        done = subprocess.run([sys.executable, "-m", "deepprobe", *args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    listed = deepprobe("recipes", "--json")["recipes"]
    assert [r["name"] for r in listed] == [p.stem for p in SHIPPED]
    assert all(r["origin"] == "bundled" and r["path"].startswith(str(site / "deepprobe" / "recipes")) for r in listed)
    run = deepprobe("fool", str(examples / "cat.jpg"), "--recipe", "fool-imperceptible", "--method", "fgsm",
                    "--out", str(tmp_path / "out"), "--json", "--quiet")
    assert run["options"]["eps"] == pytest.approx(2 / 255) and run["arguments"]["recipe"] == "fool-imperceptible"
    assert run["results"][0]["linf_255"] <= 2
