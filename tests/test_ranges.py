"""Every numeric option has a declared range (options/NAME.py: RANGES), and the CLI, recipes and the Python API
all refuse a value outside it with one line naming the option, the range and the value.

The walks below cover every options module and every command registered with options, so a module or a
command added later is covered (or fails here, naming what is missing)."""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import typing

import pytest
import typer
from typer.testing import CliRunner

import deepprobe as dp
import deepprobe.options as options_pkg
from deepprobe.cli import app
from deepprobe.cli.common import COMMAND_OPTIONS
from deepprobe.options import field_kind, resolve
from deepprobe.options.ranges import RangeError, check_ranges, parse_interval

runner = CliRunner()


def _options_modules() -> dict[str, object]:
    found = {}
    for info in pkgutil.iter_modules(options_pkg.__path__):
        module = importlib.import_module(f"deepprobe.options.{info.name}")
        if dataclasses.is_dataclass(getattr(module, "Options", None)):
            found[info.name] = module
    return found


MODULES = _options_modules()


def _numeric_fields(options_cls) -> dict[str, type]:
    """field -> int | float for every numeric field (also `int | None`, `list[float]`); bools are not numbers."""
    hints = typing.get_type_hints(options_cls)
    out = {}
    for f in dataclasses.fields(options_cls):
        kind, _ = field_kind(hints[f.name])
        if kind in (int, float):
            out[f.name] = kind
    return out


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def test_options_modules_are_found():
    assert {"fool", "patch", "explain", "noise", "age"} <= set(MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_numeric_field_declares_a_valid_range(name):
    module = MODULES[name]
    ranges = getattr(module, "RANGES", None)
    assert isinstance(ranges, dict), f"deepprobe/options/{name}.py has no RANGES dict"
    numeric = _numeric_fields(module.Options)
    missing = [f for f in numeric if f not in ranges]
    assert not missing, (f"deepprobe/options/{name}.py: numeric field(s) {', '.join(f'Options.{m}' for m in missing)} "
                         f"have no RANGES entry (e.g. RANGES['{missing[0]}'] = '[1, inf)')")
    extra = [key for key in ranges if key not in numeric]
    assert not extra, f"deepprobe/options/{name}.py: RANGES names {extra}, which are not numeric Options fields"
    for key, text in ranges.items():
        parse_interval(text)  # raises on a malformed interval
    check_ranges(module, dataclasses.asdict(module.Options()))  # the defaults lie inside their own ranges


@pytest.mark.parametrize("text, inside, outside", [
    ("(0, 1]", [1e-9, 0.5, 1], [0, -1, 1.0001, float("nan")]),
    ("[1, inf)", [1, 10**9], [0, float("inf")]),
    ("(-inf, inf)", [-1e30, 0, 1e30], [float("nan")]),
    ("[0, 0.5]", [0, 0.5], [-0.01, 0.51]),
])
def test_interval_strings(text, inside, outside):
    interval = parse_interval(text)
    assert all(v in interval for v in inside) and not any(v in interval for v in outside)


@pytest.mark.parametrize("text", ["0, 1", "(1, 0)", "[0, inf]", "(a, 1]", "[-inf, 0)"])
def test_malformed_intervals_are_refused(text):
    with pytest.raises(ValueError):
        parse_interval(text)


def _cases():
    """(command path, field, bad value, range text): one out-of-range value per numeric field of each command."""
    for recorded, group in sorted(COMMAND_OPTIONS.items()):
        module = MODULES[group]
        for name, kind in _numeric_fields(module.Options).items():
            bad = parse_interval(module.RANGES[name]).outside(kind is int)
            if bad is not None:  # a field that takes any number has nothing to refuse
                yield pytest.param(recorded, name, bad, module.RANGES[name], id=f"{recorded}:{name}")


CASES = list(_cases())


def _click_command(path: list[str]):
    cmd = typer.main.get_command(app)
    for part in path:
        cmd = cmd.commands[part]
    return cmd


def _required_arguments(cmd) -> list[str]:
    return ["examples/cat.jpg" for p in cmd.params if p.param_type_name == "argument" and p.required]


def test_the_walk_covers_every_command_with_options():
    covered = {c.values[0] for c in CASES}
    assert {"fool", "patch train", "patch apply", "explain", "evaluate", "classify", "age", "style"} <= covered
    assert len(CASES) >= 80


@pytest.mark.parametrize("recorded, name, bad, text", CASES)
def test_cli_refuses_each_out_of_range_value(recorded, name, bad, text, tmp_path):
    """Typed as a flag where the command has one, else through a recipe file: exit 2 and one line."""
    path = recorded.split()
    cmd = _click_command(path)
    flag = next((p.opts[0] for p in cmd.params if p.name == name and p.opts[0].startswith("--")), None)
    if flag is not None:
        args, label = [flag, _shown(bad)], flag
    else:
        recipe = tmp_path / "bad.toml"
        recipe.write_text(f'command = "{COMMAND_OPTIONS[recorded]}"\n[options]\n{name} = {bad!r}\n')
        args, label = ["--recipe", str(recipe)], f"{recipe}: {name}"
    res = runner.invoke(app, [*path, *_required_arguments(cmd), *args])
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert len(lines) == 1, res.stderr
    assert lines[0] == f"error: {label} must be in {text}, got {_shown(bad)}", lines[0]


@pytest.mark.parametrize("args, line", [
    (["fool", "examples/cat.jpg", "--eps", "2"], "--eps must be in (0, 1] for norm linf, got 2"),
    (["fool", "examples/cat.jpg", "--alpha", "3/2"], "--alpha must be in (0, 1] for norm linf, got 1.5"),
    (["dream", "examples/cat.jpg", "--tile", "32"], "--tile must be in [64, inf) (or 0: never tile), got 32"),
    (["patch", "train", "examples/", "--target", "toaster", "--scale-min", "1.5"],
     "--scale-max must be in [1.5, inf) (at least scale_min), got 1.2"),
])
def test_ranges_that_depend_on_another_option(args, line):
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and res.stderr.strip() == f"error: {line}", res.output


def test_related_ranges_follow_the_other_option():
    fool = MODULES["fool"].Options
    assert resolve(fool, None, {"norm": "l2", "eps": 2.0}).eps == 2.0  # an L2 budget may exceed 1
    assert resolve(MODULES["dream"].Options, None, {"tile": 0}).tile == 0  # 0: never tile
    with pytest.raises(RangeError, match=r"elite must be in \[1, 3\] \(below population 4\), got 4"):
        check_ranges("noise", {"population": 4, "elite": 4})
    check_ranges("noise", {"population": 4, "elite": 4, "method": "gradient"})  # no population there


def test_recipe_out_of_range_is_named_with_its_file(tmp_path):
    from deepprobe.options import load_recipe

    path = tmp_path / "wild.toml"
    path.write_text('command = "fool"\n[options]\neps = "-8/255"\n')
    with pytest.raises(RangeError, match=r"wild\.toml: eps must be in \(0, inf\), got -0\.0313725"):
        load_recipe(str(path))


# The Python API functions built from each options module, with the positional arguments to call them with
# (None stands for a model or a tensor: the range check must come before any work), and, for functions that
# take the options as **keywords, which fields they accept.
API_FUNCTIONS = {
    "classify": [(dp.classify, (None, None), None), (dp.knn_classify, (None, None, None), None)],
    "fool": [(dp.attack, (None, None), None), (dp.feature_attack, (None, None), None),
             (dp.fool_prompt, (None, None, None), {"eps", "alpha", "steps", "kappa", "rounds"}),
             (dp.fool_depth, (None, None, None), {"eps", "alpha", "steps", "rounds", "factor"})],
    "noise": [(dp.fool_from_noise, (None, ["toaster"]), None)],
    "patch": [(dp.train_patch, (None, None, "toaster"), None), (dp.apply_patch, (None, None, None, "toaster"), None)],
    "invert": [(dp.invert, (None, None), None)],
    "maximize": [(dp.maximize, (None,), None)],
    "dream": [(dp.dream, (None, None), None)],
    "style": [(dp.style, (None, None, None), None)],
    "age": [(dp.age, (None, 50), {"face", "frequencies", "chroma_frequencies", "steps", "lr", "l2_weight",
                                   "tv_weight", "jitter", "tolerance", "rounds"})],
    "explain": [(dp.explain, (None, None, "ig"), {"steps", "internal_batch", "samples", "noise", "window", "stride",
                                                  "discard_ratio", "head"})],
    "evaluate": [(dp.evaluate, (None, None), {f.name for f in dataclasses.fields(MODULES["evaluate"].Options)})],
    "robustness": [(dp.robustness, (None, None), {"eps", "steps", "restarts", "targets", "queries", "batch_size",
                                                  "limit", "sample", "workers"}),
                   (dp.depth_robustness, (None, None), {"eps", "steps", "batch_size", "limit", "sample", "workers"})],
}


def test_every_options_module_names_its_api_functions():
    missing = sorted(set(MODULES) - set(API_FUNCTIONS))
    assert not missing, (f"options module(s) {missing} have no entry in tests/test_ranges.py API_FUNCTIONS: name the "
                         "dp.* function(s) built from them, so their range check is tested")


def _api_cases():
    import inspect

    for group, entries in sorted(API_FUNCTIONS.items()):
        module = MODULES[group]
        for fn, args, accepted in entries:
            params = inspect.signature(fn).parameters
            fields = accepted if accepted is not None else set(params)
            for name, kind in _numeric_fields(module.Options).items():
                bad = parse_interval(module.RANGES[name]).outside(kind is int)
                if name in fields and bad is not None:
                    yield pytest.param(fn, args, name, bad, module.RANGES[name], id=f"{fn.__name__}:{name}")


API_CASES = list(_api_cases())


def test_the_api_walk_reaches_every_function():
    assert {c.values[0].__name__ for c in API_CASES} == {fn.__name__ for e in API_FUNCTIONS.values() for fn, *_ in e}
    assert len(API_CASES) >= 70


@pytest.mark.parametrize("fn, args, name, bad, text", API_CASES)
def test_api_refuses_each_out_of_range_value(fn, args, name, bad, text):
    with pytest.raises(RangeError) as caught:
        fn(*args, **{name: bad})
    assert str(caught.value) == f"{name} must be in {text}, got {_shown(bad)}"


def test_api_checks_related_and_tuple_ranges_too():
    with pytest.raises(RangeError, match=r"eps must be in \(0, 1\] for norm linf, got 2"):
        dp.attack(None, None, eps=2.0)
    with pytest.raises(RangeError, match=r"scale_max must be in \[2, inf\) \(at least scale_min\), got 1"):
        dp.train_patch(None, None, "toaster", scale_range=(2.0, 1.0))
    with pytest.raises(RangeError, match=r"target must be in \[0, 100\], got 120"):
        dp.age(None, [40, 120])
    with pytest.raises(RangeError, match=r"x must be in \[0, 1\], got 1.5"):
        from deepprobe.techniques.patch import _placements

        _placements(1, (1.5, 0.5, 0.3, 0.0), 0.3, (0.8, 1.2), 20.0, 0, 1.0, "cpu")


def test_help_shows_each_range():
    """Every flag of a numeric option says its range in --help (rich escapes the opening bracket)."""
    for recorded, group in COMMAND_OPTIONS.items():
        module = MODULES[group]
        for param in _click_command(recorded.split()).params:
            text = module.RANGES.get(param.name)
            if text and text != "(-inf, inf)":
                assert f"Range: {text.replace('[', chr(92) + '[')}." in (param.help or ""), (recorded, param.name)
    shown = runner.invoke(app, ["patch", "train", "--help"], env={"COLUMNS": "200"}).output
    assert "Range: (0, 1]. [default: 0.3]" in shown and "Range: [1, inf). [default: 200]" in shown
