"""The command line's contract: help without torch, clear one-line errors, batches that survive bad files,
no overwriting, sidecars that record the run, inputs left untouched."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from deepprobe.cli import app

WALK_HELP = r"""
import sys
import typer
from deepprobe.cli import app

def walk(cmd, path):
    yield path
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from walk(sub, path + [name])

root = typer.main.get_command(app)
paths = list(walk(root, []))
for path in paths:
    try:
        root.main(args=path + ["--help"], prog_name="deepprobe", standalone_mode=False)
    except SystemExit:
        pass
print(len(paths), "torch" in sys.modules, " ".join("/".join(p) for p in paths))
"""


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_help_of_every_command_never_imports_torch():
    out = subprocess.run([sys.executable, "-c", WALK_HELP], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    count, torch_loaded, names = out.stdout.strip().splitlines()[-1].split(" ", 2)
    assert torch_loaded == "False", "a --help screen imported torch"
    # every subcommand of the CLI contract (ARCHITECTURE.md)
    for command in ("classify", "fool", "patch/train", "patch/apply", "invert", "maximize", "dream", "age", "style",
                    "explain", "evaluate", "robustness", "models", "layers", "recipes", "rerun", "report"):
        assert command in names.split()


def test_python_dash_m_and_version():
    out = subprocess.run([sys.executable, "-m", "deepprobe", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("deepprobe ")


def test_classify_json_goes_on_past_bad_files(examples, tmp_path):
    shutil.copy(examples / "cat.jpg", tmp_path / "cat.jpg")
    shutil.copy(examples / "coffee.jpg", tmp_path / "coffee.jpg")
    (tmp_path / "broken.jpg").write_text("not a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    res = run_cli("classify", str(tmp_path), str(tmp_path / "missing.jpg"), "--json", "--top", "3")
    assert res.exit_code == 1  # some inputs failed, the others were classified
    summary = json.loads(res.stdout)
    tops = {r["input"].split("/")[-1]: r["top"][0]["class"] for r in summary["results"]}
    assert tops["coffee.jpg"] == "espresso" and tops["cat.jpg"] in {"tiger cat", "Egyptian cat", "tabby"}
    assert len(summary["results"][0]["top"]) == 3
    failed = {f["input"].split("/")[-1]: f["error"] for f in summary["failed"]}
    assert set(failed) == {"broken.jpg", "empty.png", "missing.jpg"}
    assert "empty" in failed["empty.png"] and "no such file" in failed["missing.jpg"]
    assert summary["outputs"] == [] and summary["versions"]["torch"]


@pytest.mark.parametrize("args,words", [
    (["classify", "examples/cat.jpg", "--model", "resnet_nope"], "unknown model spec"),
    (["classify", "examples/cat.jpg", "--device", "tpu"], "unknown device"),
    (["fool", "examples/cat.jpg", "--target", "ostrch"], 'did you mean "ostrich"'),
    (["fool", "examples/cat.jpg", "--eps", "eight"], "eps"),
    (["layers", "--model", "timm:resnet10t", "--weights", "nope.pth"], "not found"),
    (["classify", "no_such_folder/"], "no readable images"),
    # every numeric option is checked against its declared range (tests/test_ranges.py walks them all)
    (["patch", "train", "examples/", "--target", "toaster", "--steps", "0"], "--steps must be in [1, inf), got 0"),
    (["classify", "examples/", "--batch-size", "0"], "--batch-size must be in [1, inf), got 0"),
    (["maximize", "--target", "ostrich", "--lr", "0"], "--lr must be in (0, inf), got 0"),
])
def test_user_errors_are_one_line_without_traceback(args, words):
    res = run_cli(*args)
    assert res.exit_code == 2, (res.exit_code, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], res.stderr
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.output
    assert isinstance(res.exception, SystemExit) and res.exception.code == 2  # the handler's exit, nothing escaped


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_only_debug_shows_the_traceback(debug):
    """In a real process (the in-process runner above never prints one): one line and exit 2, or with --debug the
    traceback."""
    out = subprocess.run([sys.executable, "-m", "deepprobe", "classify", "examples/cat.jpg", "--model", "nope",
                          *(["--debug"] if debug else [])], capture_output=True, text=True, timeout=120)
    if debug:
        assert out.returncode != 0 and "Traceback" in out.stderr
    else:
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), out.stderr
        assert "Traceback" not in out.stderr + out.stdout


def test_outputs_never_overwrite_and_sidecars_record_the_run(examples, tmp_path):
    src = tmp_path / "in" / "cat.jpg"
    src.parent.mkdir()
    shutil.copy(examples / "cat.jpg", src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "out"
    args = ["fool", str(src), "--method", "fgsm", "--out", str(out), "--seed", "3", "--json", "--quiet"]
    first = json.loads(run_cli(*args).stdout)
    second = json.loads(run_cli(*args).stdout)
    assert {p.split("/")[-1] for p in first["outputs"]} == {"cat_fool.png", "cat_fool.json", "cat_fool_panel.png",
                                                            "cat_fool_panel.json"}
    assert "cat_fool-1.png" in {p.split("/")[-1] for p in second["outputs"]}
    assert not set(first["outputs"]) & set(second["outputs"])
    png = out / "cat_fool.png"
    forced = json.loads(run_cli(*args, "--force").stdout)
    assert str(png) in forced["outputs"] and png.exists() and len(list(out.glob("cat_fool*.png"))) == 4
    # --force rewrote the same names instead of adding cat_fool-2.png
    sidecar = json.loads((out / "cat_fool.json").read_text())
    for key in ("command", "arguments", "model", "device", "seed", "versions", "elapsed_s", "result"):
        assert key in sidecar
    assert sidecar["command"] == "fool" and sidecar["seed"] == 3 and sidecar["device"] == "cpu"
    assert sidecar["arguments"]["method"] == "fgsm" and sidecar["model"] == "efficientnet_lite0"
    assert {"deepprobe", "torch", "timm"} <= set(sidecar["versions"])
    assert sidecar["result"]["output"].endswith("cat_fool.png")
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest  # the input is never modified


def test_models_and_layers_list_what_users_pick_from():
    models = json.loads(run_cli("models", "--json").stdout)
    assert set(models["bundled"]) == {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
    assert any(row["spec"].startswith("onnx:") for row in models["spec_forms"])
    layers = json.loads(run_cli("layers", "--json", "--grep", "blocks.").stdout)["layers"]
    shapes = {row["name"]: row["shape"] for row in layers}
    assert shapes["blocks.3"] == [1, 80, 14, 14] and shapes["blocks.6"] == [1, 320, 7, 7]


def test_help_paragraphs_are_reflowed_not_broken_where_the_source_wraps():
    """Rich keeps every newline of a docstring: the source's wrapping must not break --help mid-sentence."""
    import inspect

    from deepprobe.cli.common import reflow
    from deepprobe.cli.evaluate import evaluate_cmd

    doc = inspect.cleandoc(evaluate_cmd.__doc__)
    wrapped = next(line for line in doc.splitlines()[2:] if line and not line.endswith("."))  # a mid-sentence break
    res = CliRunner().invoke(app, ["evaluate", "--help"], env={"COLUMNS": "400"}, terminal_width=400)
    assert res.exit_code == 0
    lines = [line.strip() for line in res.output.splitlines()]
    assert wrapped.strip() in res.output  # the words are there...
    assert wrapped.strip() not in lines, "a source line break survived into --help"  # ...not as a line of their own
    assert reflow("Title.\n\nOne\nparagraph.\n- item one\n- item two\n\nNext.") == \
        "Title.\n\nOne paragraph.\n- item one\n- item two\n\nNext."


def test_help_shows_no_value_type_for_flags():
    """A flag takes no value: no `--json <bool>` or `--help <bool>` in any help screen; options that take one still
    show its type."""
    import typer

    def walk(cmd, path):
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, path + [name])

    screens = {" ".join(path): CliRunner().invoke(app, path + ["--help"], env={"COLUMNS": "200"}).output
               for path in walk(typer.main.get_command(app), [])}
    assert len(screens) > 15 and all("--help" in text for text in screens.values())
    assert not [name for name, text in screens.items() if "<bool>" in text]
    assert "--version" in screens[""] and "--json" in screens["classify"] and "--trust" in screens["rerun"]
    assert "<int>" in screens["classify"] and "<str>" in screens["classify"]  # value types are still shown
