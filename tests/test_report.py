"""`deepprobe report`: runs rebuilt from real sidecars, one self-contained page, checked in headless Chromium.

The sidecars come from commands registered on a fresh Typer app with the real `command` decorator (so
this does not depend on the technique commands): a two-photo run with a panel and a loss curve, a run of
another command, a third run, a sidecar from before run_id existed, and a JSON file that is no sidecar.
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from deepprobe.cli import app as main_app
from deepprobe.cli.common import command
from deepprobe.doc_links import docs_url
from deepprobe.report import collect_runs

runner = CliRunner()


def _demo_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main():
        """Test app."""

    @command(app, "demo", options=False)
    def demo(run, images: list[str] = typer.Argument(...), steps: int = typer.Option(5, "--steps")):
        import torch

        from deepprobe.io import read_image

        gen = torch.Generator().manual_seed(run.common.seed)
        curve = [round(2.0 / (1 + i) + 0.01 * float(torch.rand(1, generator=gen)), 5) for i in range(steps)]
        tiles = []
        for path in images:
            x = read_image(path)[..., :96, :128]
            y = (0.8 * x + 0.2 * torch.rand(x.shape, generator=gen)).clamp(0, 1)
            tiles.append(y)
            run.save_image(y, f"{Path(path).stem}_demo.png",
                           result={"input": path, "class": "tabby", "score": 0.5, "loss_curve": curve})
        if len(tiles) > 1:
            panel = torch.cat(tiles, dim=3)
            run.save_image(panel, "demo_panel.png", result={"inputs": len(tiles)})

    @command(app, "classify")
    def other(run, images: list[str] = typer.Argument(...)):
        from deepprobe.io import read_image

        for path in images:
            run.save_image(1 - read_image(path)[..., :64, :64], f"{Path(path).stem}_neg.png",
                           result={"input": path, "top": run.options.top})

    return app


@pytest.fixture(scope="module")
def folder(tmp_path_factory, examples) -> Path:
    out = tmp_path_factory.mktemp("runs")
    app = _demo_app()
    cat, coffee, rocket = (str(examples / f"{n}.jpg") for n in ("cat", "coffee", "rocket"))
    for argv in (["demo", cat, coffee, "--steps", "8"], ["classify", rocket], ["demo", rocket, "--seed", "2"]):
        res = runner.invoke(app, [*argv, "--out", str(out), "-q"])
        assert res.exit_code == 0, res.output
        time.sleep(0.02)  # distinct start times
    legacy = json.loads((out / "rocket_demo.json").read_text())
    for key in ("run_id", "started", "cwd", "options"):
        legacy.pop(key, None)
    shutil.copy(out / "rocket_demo.png", out / "old_demo.png")
    (out / "old_demo.json").write_text(json.dumps(dict(legacy, output=str(out / "old_demo.png"))))
    (out / "notes.json").write_text(json.dumps({"not": "a sidecar"}))
    return out


def test_runs_are_grouped_newest_first(folder):
    runs = collect_runs(folder)
    assert [r.command for r in runs] == ["demo", "demo", "classify", "demo"]  # legacy (mtime) is newest
    first = runs[-1]
    assert sorted(i.path.name for i in first.items) == ["cat_demo.png", "coffee_demo.png", "demo_panel.png"]
    assert [i.panel for i in first.items if i.path.name == "demo_panel.png"] == [True]
    assert [p.name for p in first.inputs()] == ["cat.jpg", "coffee.jpg"]
    assert len(first.loss_curves()) == 1 and len(first.loss_curves()[0][1]) == 8  # one shared curve, shown once


def _report(folder: Path, *args: str) -> tuple[Path, str]:
    res = runner.invoke(main_app, ["report", str(folder), "--json", "--force", *args])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["runs"] == 4 and summary["commands"] == ["classify", "demo"]
    path = Path(summary["outputs"][0])
    return path, path.read_text()


def test_page_is_self_contained(folder):
    path, page = _report(folder)
    assert path == folder / "report.html"
    assert page.count('<article class="run"') == 4
    assert page.index('id="cmd-demo"') < page.index('id="cmd-classify"')  # the command with the newest run first
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == 6 + 5  # outputs (5 results + 1 panel) + input thumbnails (cat, coffee, rocket x3)
    assert all(s.startswith("data:image/") for s in sources)
    # nothing loads from elsewhere; the only outside links are each run kind's page of the documentation site
    docs = re.findall(r'<a class="docs" href="([^"]*)"', page)
    assert docs == [docs_url("classify")]  # classify has a page; the made-up `demo` command has none
    assert not re.search(r'(src|href)="(https?:|file:)', re.sub(r'<a class="docs" href="[^"]*"', "", page))
    assert page.count("<polyline") == 3  # one curve per demo run (classify records none)
    lines = re.findall(r'<pre class="cmdline">([^<]*)', page)  # command lines rebuilt from the sidecars
    assert any(line.startswith("deepprobe classify --model efficientnet_lite0") and line.endswith("rocket.jpg")
               for line in lines)
    assert "deepprobe demo  # this deepprobe has no `demo` command" in html.unescape(page)


def test_link_mode_links_relatively(folder, tmp_path):
    path, page = _report(folder, "--link", "--output", str(tmp_path / "sub" / "r.html"))
    linked = [s for s in re.findall(r'<img src="([^"]*)"', page) if not s.startswith("data:")]
    assert len(linked) == 6 and all((path.parent / s).is_file() for s in linked)
    assert all(not Path(s).is_absolute() for s in linked)


def test_empty_and_missing_folders(tmp_path):
    res = runner.invoke(main_app, ["report", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "no such folder" in " ".join(res.output.split())
    res = runner.invoke(main_app, ["report", str(tmp_path), "-q"])
    assert res.exit_code == 0 and "No runs found" in (tmp_path / "report.html").read_text()



def test_paths_print_as_they_are_not_as_markup(tmp_path):
    """A folder named with brackets is no Rich markup: the error and the summary line show it unchanged."""
    odd = tmp_path / "runs[red]x"
    res = runner.invoke(main_app, ["report", str(odd)])
    assert res.exit_code == 2 and res.stderr.strip() == f"error: {odd}: no such folder"
    odd.mkdir()
    res = runner.invoke(main_app, ["report", str(odd)])
    unwrapped = "".join(res.stdout.split())  # the console wraps the line at its width
    assert res.exit_code == 0 and unwrapped == "".join(f"0 run(s) from {odd} -> {odd / 'report.html'}".split())

# ----- a real browser --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium (Debian package `chromium`; .ci/run installs it when missing). In CI (CI or
    DEEPPROBE_REQUIRE_CHROMIUM set, which .ci/run exports) a missing browser fails these tests; elsewhere
    they are skipped with the command that installs it. Nothing is installed from inside the test run."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    message = "headless Chromium is not installed (apt-get install chromium)"
    if os.environ.get("DEEPPROBE_REQUIRE_CHROMIUM") or os.environ.get("CI"):
        pytest.fail(f"{message}; CI requires it: .ci/run installs it")
    pytest.skip(message)


def _load(chromium: str, page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and the console messages Chromium logged."""
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def test_chromium_console_check_catches_errors(chromium, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><body><script>console.error('broken'); missing();</script></body>")
    _, console = _load(chromium, bad, tmp_path / "profile")
    assert any("broken" in line for line in console) and any("missing" in line for line in console)


def test_report_loads_in_chromium(chromium, folder, tmp_path):
    path, _ = _report(folder)
    dom, console = _load(chromium, path, tmp_path / "profile")
    assert console == []
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-ok="1"' in body  # the page's script ran to its end
    assert 'data-runs="4"' in body and 'data-broken="0"' in body  # every image decoded
    assert dom.count('<article class="run"') == 4
