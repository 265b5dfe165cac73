"""The documentation: the README is a short front page whose every old section lives on in docs/, the site builds
with `mkdocs build --strict` (broken links, anchors and docstring references fail it) with the tutorials executed,
every command's --help and `deepprobe report` link to pages that exist, and the API reference covers every public
name."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepprobe.doc_links import docs_url, page_of

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"

# The README's headings before it became a front page (1,572 lines): each must stay a heading on some page.
OLD_SECTIONS = [
    "deepprobe", "Set-up (two commands)", "Commands", "classify", "age", "fool", "fool --from-noise", "patch",
    "maximize", "invert", "dream", "style",
    "explain: CNNs and captum (gradcam, gradcam++, saliency, ig, smoothgrad, occlusion, guided-backprop)",
    "explain: vision transformers (rollout, chefer, attention)",
    "evaluate: explanation metrics (Quantus's families, batched, over photos or a data set)",
    "robustness: accuracy under attack on a data set", "RobustBench's protocol",
    "robustness: the attacks (AutoAttack, on the engine)", "Detectors (torchvision detection models)",
    "Segmenters (torchvision segmentation models)", "CLIP and DETR (`hf:DIR`)",
    "Embedding models (DINO, CLIP/SigLIP towers)", "Segment Anything and Depth Anything (`hf:DIR`, `python:`)",
    "Model specs (`--model`)", "Common options", "Outputs", "Recipes, reruns and reports", "Recipes", "Rerun", "Report",
    "Batch mode", "Benchmarks", "Python API", "Developing",
]
# headings only the front page has (a section added to the README later needs a page too)
FRONT_PAGE = {"deepprobe", "Set-up (two commands)", "Six things to try", "In Python and Jupyter", "Commands",
              "Documentation", "Developing"}
HOMES = {"Developing": "DEVELOPING.md"}  # a section whose page has another title


def headings(text: str) -> list[str]:
    """Markdown headings outside code fences."""
    out, fence = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and (m := re.match(r"#{1,6} (.+)", line)):
            out.append(m.group(1).strip())
    return out


def pages() -> dict[str, str]:
    return {p.relative_to(DOCS).as_posix(): p.read_text() for p in DOCS.rglob("*.md")}


def slug(heading: str) -> str:
    """The anchor mkdocs gives a heading (Python-Markdown's toc slugify, after markup is stripped)."""
    from markdown.extensions.toc import slugify

    return slugify(re.sub(r"[`*]", "", heading), "-")


def ci_block(text: str, name: str) -> str:
    block = re.search(rf"<!-- ci:{name} -->\s*```bash\n(.*?)\n```\s*<!-- /ci:{name} -->", text, re.S)
    assert block, f"README lacks the ci:{name} block"
    return block.group(1).strip()


def nav_files() -> list[str]:
    from mkdocs.config import load_config

    config = load_config(str(ROOT / "mkdocs.yml"))

    def walk(items):
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            yield from walk(value) if isinstance(value, list) else [value]
    return list(walk(config["nav"]))


def build_module():
    spec = importlib.util.spec_from_file_location("docs_build", DOCS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_a_short_front_page_with_the_ci_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    main, tests = ci_block(text, "main"), ci_block(text, "tests")
    assert "deepprobe classify examples/" in main and "pytest" in tests
    started = (DOCS / "getting-started.md").read_text()
    assert f"```bash\n{main}\n```" in started and f"```bash\n{tests}\n```" in started  # the same two commands
    pictures = re.findall(r"!\[[^\]]*\]\((docs/[^)]+)\)", text)
    assert len(pictures) >= 6 and all((ROOT / p).is_file() for p in pictures)
    links = [t for t in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text) if not t.startswith("http")]
    assert sum(t.startswith("docs/") and t.endswith(".md") for t in links) >= 10  # links into the site's pages
    assert all((ROOT / t).exists() for t in links), [t for t in links if not (ROOT / t).exists()]


def test_every_section_of_the_readme_has_a_home_in_docs():
    found = {h: name for name, text in pages().items() for h in headings(text)}
    current = [h for h in headings(README.read_text()) if h not in FRONT_PAGE]
    missing = [h for h in OLD_SECTIONS + current if h not in found and not (DOCS / HOMES.get(h, "-")).is_file()]
    assert not missing, f"README sections with no page under docs/: {missing}"


def test_the_nav_lists_every_page_and_every_listed_page_exists():
    listed = nav_files()
    assert all((DOCS / f).is_file() for f in listed), [f for f in listed if not (DOCS / f).is_file()]
    on_disk = set(pages()) | {p.relative_to(DOCS).as_posix() for p in (DOCS / "tutorials").glob("*.ipynb")}
    assert on_disk <= set(listed), f"pages missing from mkdocs.yml's nav: {sorted(on_disk - set(listed))}"
    assert len(list((DOCS / "tutorials").glob("*.ipynb"))) >= 4


def test_tutorials_are_committed_without_outputs():
    """Outputs (megabytes of PNGs) are made by the build, never stored in git."""
    import nbformat

    for notebook in (DOCS / "tutorials").glob("*.ipynb"):
        book = nbformat.read(notebook, as_version=4)
        nbformat.validate(book)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), notebook.name


def _command_paths():
    import typer

    from deepprobe.cli import app

    def walk(cmd, path):
        subs = getattr(cmd, "commands", {})
        if path:
            yield path
        for name, sub in subs.items():
            yield from walk(sub, path + [name])
    return list(walk(typer.main.get_command(app), []))


def test_every_command_help_links_to_a_page_and_anchor_that_exist():
    from deepprobe.cli import app

    listed, texts = nav_files(), pages()
    paths = _command_paths()
    assert {"fool", "explain", "patch train", "report"} <= {" ".join(p) for p in paths}
    for path in paths:
        command = " ".join(path)
        page = page_of(command)
        assert page, f"`deepprobe {command}` has no page in deepprobe/doc_links.py"
        name, _, anchor = page.partition("#")
        assert name in listed, f"{command}: {name} is not in the site's nav"
        assert not anchor or anchor in {slug(h) for h in headings(texts[name])}, f"{command}: no #{anchor} in {name}"
        shown = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
        assert shown.exit_code == 0 and f"Docs: {docs_url(command)}" in shown.output, command


def test_the_api_reference_documents_every_public_name():
    import deepprobe

    text = (DOCS / "api.md").read_text()
    documented = {line.split()[-1].rsplit(".", 1)[-1] for line in text.splitlines() if line.startswith(":::")}
    missing = sorted(set(deepprobe._EXPORTS) - documented)
    assert not missing, f"public names missing from docs/api.md: {missing}"


@pytest.mark.slow
def test_site_builds_strictly_with_the_tutorials_executed(tmp_path):
    """What `python docs/build.py` does: every notebook executed once (no error, figures among the outputs), then
    `mkdocs build --strict` of the staged docs with those outputs rendered."""
    build = build_module()
    staged = build.stage(tmp_path)
    import nbformat

    build.execute_all(staged, log=lambda *_: None)
    for notebook in build.notebooks():
        book = nbformat.read(staged / "tutorials" / notebook.name, as_version=4)
        outputs = [o for cell in book.cells if cell.cell_type == "code" for o in cell.outputs]
        assert not [o for o in outputs if o.output_type == "error"], notebook.name
        figures = [o for o in outputs if "image/png" in o.get("data", {})]
        assert len(figures) >= 2, f"{notebook.name}: results did not show as figures"
    site = tmp_path / "site"
    build.build(staged, site)
    for name in nav_files():
        page = site / Path(name).with_suffix("") / "index.html" if name != "index.md" else site / "index.html"
        assert page.is_file(), name
    tutorial = (site / "tutorials" / "explain_evaluate" / "index.html").read_text()
    assert tutorial.count("data:image/png;base64,") >= 4  # the executed outputs, rendered
    api = (site / "api" / "index.html").read_text()
    assert 'id="deepprobe.techniques.fool.attack"' in api and 'id="deepprobe.explain.shown_maps.Maps"' in api
