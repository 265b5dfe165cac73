"""The bundled model classifies real photos correctly (the ARCHITECTURE sanity figures); the table reads."""
import torch


def test_cat_is_a_cat(lite0, cat):
    import deepprobe as dp

    top = dp.classify(lite0, cat, top=3)[0].labels
    assert set(top) & {"tiger cat", "Egyptian cat", "tabby"}
    assert top[0] in {"tiger cat", "Egyptian cat", "tabby"}


def test_espresso_is_espresso(lite0, coffee):
    pred = lite0.predict(coffee)[0]
    assert lite0.class_name(int(pred.argmax())) == "espresso"
    assert float(pred.max()) > 0.8


def test_the_table_reads_at_80_columns(lite0, examples, monkeypatch):
    """At 80 columns (COLUMNS=80) no cell wraps and no file name is cut: every name and class is whole on its
    line, one line per class in rank order; at 200 columns it is one row per image."""
    import io

    from rich.console import Console
    from typer.testing import CliRunner

    import deepprobe as dp
    import deepprobe.cli.classify as classify_cli
    from deepprobe.cli import app

    def console(columns: int) -> Console:
        monkeypatch.setenv("COLUMNS", str(columns))  # what a terminal of that width tells rich
        made = Console(file=io.StringIO(), highlight=False)
        assert made.width == columns
        monkeypatch.setattr(classify_cli, "out_console", made)
        return made

    paths = sorted(examples.glob("*.jpg"))
    assert "astronaut.jpg" in [p.name for p in paths] and len(paths) >= 5
    preds = dp.classify(lite0, torch.cat([lite0.load_image(p) for p in paths]), top=5)

    narrow = console(80)
    res = CliRunner().invoke(app, ["classify", *map(str, paths)])
    assert res.exit_code == 0, res.output
    lines = narrow.file.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    rows = [line for line in lines if line.startswith("│")]
    for path, pred in zip(paths, preds):
        block = next(i for i, line in enumerate(rows) if f" {path.name} " in line)  # the name, whole
        for k, (label, p) in enumerate(zip(pred.labels, pred.probabilities)):
            assert f" {label} " in rows[block + k] and f"{p:.1%}" in rows[block + k], (path.name, label, rows[block + k])

    wide = console(200)
    wide.print(classify_cli._table([(p.name, list(zip(r.labels, r.probabilities))) for p, r in zip(paths, preds)], "t"))
    rows = [line for line in wide.file.getvalue().splitlines() if line.startswith("│")]
    assert len(rows) == len(paths)
    for path, pred, line in zip(paths, preds, rows):
        assert path.name in line and all(f"{label} " in line for label in pred.labels)
