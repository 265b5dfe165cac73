"""One self-contained HTML page showing every run in an output folder (torch-free).

Runs are rebuilt from the JSON sidecars: outputs of one invocation share a "run_id" (older sidecars are
grouped by command, start time and arguments). Each run shows its command line, inputs (thumbnails),
result images, panels, a metrics table and the loss curve the engine recorded, drawn as inline SVG.
Runs are grouped by command, newest first. Images are inlined as base64 (or linked relatively).
"""
from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .doc_links import docs_url

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif"}
THUMB = 224  # longest side of input thumbnails (px)
_SKIP_METRICS = {"input", "output", "panel", "loss_curve", "path"}
_PANEL_WORDS = ("panel", "preview", "grid", "trajectory", "montage")
_FILE_SUFFIXES = (*IMAGE_SUFFIXES, ".json", ".html", ".npy", ".pt", ".pth", ".onnx", ".safetensors")


@dataclasses.dataclass
class Item:
    """One output file and the result its sidecar recorded."""

    path: Path
    result: dict[str, Any]
    panel: bool = False


@dataclasses.dataclass
class RunGroup:
    """All outputs of one invocation."""

    key: str
    record: dict[str, Any]  # the sidecar fields shared by the run (command, arguments, model, ...)
    started: datetime.datetime
    items: list[Item] = dataclasses.field(default_factory=list)
    latest: float = 0.0  # newest sidecar's mtime: orders runs started in the same instant

    @property
    def command(self) -> str:
        return str(self.record.get("command", "?"))

    def inputs(self) -> list[Path]:
        """Input files named in the results, resolved against the folder the run was started from."""
        base = Path(self.record["cwd"]) if isinstance(self.record.get("cwd"), str) else None
        seen: dict[str, Path] = {}
        for item in self.items:
            value = item.result.get("input")
            if isinstance(value, str) and value not in seen:
                path = Path(value)
                if not path.is_absolute() and base is not None and not path.exists():
                    path = base / path
                seen[value] = path
        return list(seen.values())

    def loss_curves(self) -> list[tuple[str, list[float]]]:
        """Distinct loss curves (a batch records one mean curve on every output: shown once)."""
        curves, seen = [], set()
        for item in self.items:
            curve = item.result.get("loss_curve")
            if isinstance(curve, list) and len(curve) >= 2 and all(isinstance(v, (int, float)) for v in curve):
                key = tuple(curve)
                if key not in seen:
                    seen.add(key)
                    curves.append((item.path.stem, [float(v) for v in curve]))
        return curves


def collect_runs(folder: str | Path) -> list[RunGroup]:
    """Every run under `folder` (recursively), newest first; JSON files that are not sidecars are skipped."""
    folder = Path(folder)
    groups: dict[str, RunGroup] = {}
    for sidecar in sorted(folder.rglob("*.json")):
        record = _read_sidecar(sidecar)
        if record is None:
            continue
        output = _output_path(sidecar, record)
        key = _run_key(record)
        if key not in groups:
            shared = {k: v for k, v in record.items() if k not in ("output", "result")}
            groups[key] = RunGroup(key, shared, _started(record, sidecar))
        groups[key].items.append(Item(output, record.get("result") or {}))
        groups[key].latest = max(groups[key].latest, sidecar.stat().st_mtime)
    runs = sorted(groups.values(), key=lambda r: (r.started, r.latest), reverse=True)
    for run in runs:
        panels = {Path(str(i.result["panel"])).name for i in run.items if isinstance(i.result.get("panel"), str)}
        for item in run.items:
            item.panel = item.path.name in panels or _looks_like_panel(item.path)
    return runs


def _looks_like_panel(path: Path) -> bool:
    """Side-by-side figures (panels, previews, grids) get the full width; so does any much-wider image."""
    if any(word in path.stem for word in _PANEL_WORDS):
        return True
    if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
        return False
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:  # reads the header only
            return img.width > 2 * img.height
    except (OSError, UnidentifiedImageError):
        return False


def _read_sidecar(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # not a sidecar (any JSON file may sit in an output folder)
    if isinstance(record, dict) and isinstance(record.get("command"), str) and isinstance(record.get("arguments"), dict):
        return record
    return None


def _output_path(sidecar: Path, record: dict) -> Path:
    """The output beside the sidecar (the recorded path may be relative to another folder)."""
    recorded = record.get("output")
    if isinstance(recorded, str):
        beside = sidecar.with_name(Path(recorded).name)
        if beside.exists():
            return beside
    for suffix in sorted(IMAGE_SUFFIXES):
        candidate = sidecar.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return sidecar.with_name(Path(recorded).name) if isinstance(recorded, str) else sidecar.with_suffix(".png")


def _run_key(record: dict) -> str:
    if isinstance(record.get("run_id"), str):
        return record["run_id"]
    # sidecars written before run_id existed: outputs of one run share these fields exactly
    shared = {k: record.get(k) for k in ("command", "arguments", "started", "elapsed_s", "seed", "device")}
    return json.dumps(shared, sort_keys=True, default=str)


def _started(record: dict, sidecar: Path) -> datetime.datetime:
    value = record.get("started")
    if isinstance(value, str):
        try:
            stamp = datetime.datetime.fromisoformat(value)
            return stamp if stamp.tzinfo else stamp.astimezone()
        except ValueError:
            pass
    return datetime.datetime.fromtimestamp(sidecar.stat().st_mtime).astimezone()


# ----- HTML ---------------------------------------------------------------------------------------

def build_html(runs: Sequence[RunGroup], *, title: str, link_from: Path | None = None,
               command_line: Callable[[dict], str] | None = None) -> str:
    """The page. `link_from`: link images relative to this folder instead of inlining them.
    `command_line(record)`: how to show the command that made a run (the CLI rebuilds it)."""
    by_command: dict[str, list[RunGroup]] = {}
    for run in runs:  # already newest first, so commands come in the order of their newest run
        by_command.setdefault(run.command, []).append(run)
    nav = " ".join(f'<a href="#cmd-{_slug(c)}">{_e(c)} <span class="n">{len(rs)}</span></a>'
                   for c, rs in by_command.items())
    body = []
    for cmd, group in by_command.items():
        url = docs_url(cmd)
        docs = f' <a class="docs" href="{_e(url)}" title="what {_e(cmd)} does, on the documentation site">docs</a>' \
            if url else ""
        body.append(f'<section class="command" id="cmd-{_slug(cmd)}"><h2>{_e(cmd)} '
                    f'<span class="n">{len(group)} run{"s" if len(group) != 1 else ""}</span>{docs}</h2>')
        body.extend(_run_html(run, link_from, command_line) for run in group)
        body.append("</section>")
    if not runs:
        body.append('<p class="empty">No runs found: no JSON sidecars in this folder.</p>')
    generated = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return _PAGE.format(title=_e(title), nav=nav, body="\n".join(body), count=len(runs),
                        generated=_e(generated), style=_STYLE, script=_SCRIPT)


def _run_html(run: RunGroup, link_from: Path | None, command_line) -> str:
    rec = run.record
    when = run.started.strftime("%Y-%m-%d %H:%M:%S")
    model = f"{rec.get('model')} (random weights)" if rec.get("random_init") else rec.get("model")
    facts = [("model", model), ("weights", rec.get("weights")), ("device", rec.get("device")), ("seed", rec.get("seed")),
             ("elapsed", f"{rec['elapsed_s']:.1f} s" if isinstance(rec.get("elapsed_s"), (int, float)) else None),
             ("deepprobe", (rec.get("versions") or {}).get("deepprobe")),
             ("torch", (rec.get("versions") or {}).get("torch"))]
    facts_html = "".join(f"<span><b>{_e(k)}</b> {_e(v)}</span>" for k, v in facts if v not in (None, ""))
    line = command_line(rec) if command_line else f"deepprobe {run.command}"
    parts = [f'<article class="run" data-command="{_e(run.command)}" id="run-{_slug(run.key)[:40]}">',
             f'<header><h3>{_e(run.command)} <time datetime="{_e(run.started.isoformat())}">{when}</time></h3>'
             f'<div class="facts">{facts_html}</div><pre class="cmdline">{_e(line)}</pre></header>']
    inputs = run.inputs()
    if inputs:
        parts.append('<h4>inputs</h4><div class="row">' + "".join(_input_html(p) for p in inputs) + "</div>")
    results = [i for i in run.items if not i.panel]
    panels = [i for i in run.items if i.panel]
    if results:
        parts.append('<h4>results</h4><div class="row">' + "".join(_output_html(i, link_from) for i in results)
                     + "</div>")
    if panels:
        parts.append('<h4>panels</h4><div class="panels">' + "".join(_output_html(i, link_from) for i in panels)
                     + "</div>")
    table = _metrics_html(results or panels)
    if table:
        parts.append("<h4>metrics</h4>" + table)
    parts.extend(_accuracy_html(item.result) for item in run.items if isinstance(item.result.get("stage_accuracy"), dict))
    parts.extend(_evaluation_html(item.result["evaluation"]) for item in run.items
                 if isinstance(item.result.get("evaluation"), dict) and "ranking" in item.result["evaluation"])
    curves = run.loss_curves()
    if curves:
        parts.append('<h4>loss</h4><div class="row">'
                     + "".join(loss_svg(values, label if len(curves) > 1 else None) for label, values in curves)
                     + "</div>")
    parts.append("</article>")
    return "\n".join(parts)


def _input_html(path: Path) -> str:
    if not path.is_file():
        return f'<figure class="missing"><figcaption>{_e(path.name)} (not found)</figcaption></figure>'
    try:
        uri = _thumbnail_uri(path)
    except OSError as exc:
        return f'<figure class="missing"><figcaption>{_e(path.name)} ({_e(exc)})</figcaption></figure>'
    return f'<figure><img src="{uri}" alt="{_e(path.name)}"><figcaption>{_e(path.name)}</figcaption></figure>'


def _output_html(item: Item, link_from: Path | None) -> str:
    name = _e(item.path.name)
    if not item.path.is_file():
        return f'<figure class="missing"><figcaption>{name} (missing)</figcaption></figure>'
    if item.path.suffix.lower() not in IMAGE_SUFFIXES:
        href = _relative(item.path, link_from) if link_from else item.path.resolve().as_uri()
        return f'<figure class="file"><a href="{_e(href)}">{name}</a></figure>'
    src = _relative(item.path, link_from) if link_from else _data_uri(item.path)
    caption = name
    for key in ("final_class", "class", "label"):
        if isinstance(item.result.get(key), str):
            caption += f"<br><span class=\"dim\">{_e(item.result[key])}</span>"
            break
    lazy = ' loading="lazy"' if link_from else ""  # inlined images are in the page already
    return f'<figure><img src="{_e(src)}" alt="{name}" class="zoomable"{lazy}><figcaption>{caption}</figcaption></figure>'


def _metrics_html(items: list[Item]) -> str:
    rows, columns = [], []
    for item in items:
        row = {k: v for k, v in item.result.items() if k not in _SKIP_METRICS and _is_metric(v)}
        if row:
            rows.append((item.path.name, row))
            columns += [k for k in row if k not in columns]
    if not rows:
        return ""
    head = "".join(f"<th>{_e(c)}</th>" for c in ["output", *columns])
    body = "".join("<tr><td>" + _e(name) + "</td>" + "".join(f"<td>{_e(_fmt(row.get(c)))}</td>" for c in columns)
                   + "</tr>" for name, row in rows)
    return f'<div class="scroll"><table class="metrics"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _accuracy_html(summary: dict) -> str:
    """A robustness run's figures: clean accuracy, then per eps the accuracy after each attack and at the end,
    with the 95% intervals the summary carries."""
    ci = summary.get("ci95") or {}
    linf = summary.get("norm", "linf") == "linf"

    def cell(value, bounds) -> str:
        if not isinstance(value, (int, float)):
            return ""
        text = f"{value:.1%}"
        if isinstance(bounds, list) and len(bounds) == 2:
            text += f' <span class="dim">({bounds[0]:.0%}–{bounds[1]:.0%})</span>'
        return text

    stage_acc = summary["stage_accuracy"]
    stages = list(next(iter(stage_acc.values()), {}))
    head = "".join(f"<th>after {_e(s)}</th>" for s in stages)
    rows = []
    for key, by_stage in stage_acc.items():
        eps = (summary.get("per_eps") or {}).get(key, {}).get("eps")
        label = f"{eps * 255:g}/255" if linf and isinstance(eps, (int, float)) else key
        stage_cells = "".join(f"<td>{cell(by_stage.get(s), (ci.get('stage_accuracy') or {}).get(key, {}).get(s))}</td>"
                              for s in stages)
        final = cell((summary.get("robust_accuracy") or {}).get(key), (ci.get("robust_accuracy") or {}).get(key))
        rows.append(f"<tr><td>{_e(label)}</td>{stage_cells}<td><b>{final}</b></td></tr>")
    note = (f'{_e(summary.get("n"))} images · labels: {_e(summary.get("labels"))} · clean '
            f'{cell(summary.get("clean_accuracy"), ci.get("clean_accuracy"))} · intervals: {_e(ci.get("method", ""))}'
            + ("" if summary.get("complete", True) else " · <b>incomplete</b> (interrupted: run again to go on)"))
    return (f'<h4>{_e(summary.get("measure", "accuracy")).split(":")[0]} under attack</h4><p class="dim">{note}</p>'
            f'<div class="scroll"><table class="metrics"><thead><tr><th>eps</th>{head}<th>robust</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _evaluation_html(summary: dict) -> str:
    """An evaluate run's methods x metrics table: mean and 95% interval per cell, n, and in bold the best method
    of each metric with those the paired test cannot tell from it."""
    metrics = summary.get("metrics") or {}
    names = list(metrics)
    columns = list(dict.fromkeys(m for per in metrics.values() for m in per))
    leaders: dict[str, set] = {}
    for metric, ranking in (summary.get("ranking") or {}).items():
        order = ranking.get("order") or []
        if order:
            leaders[metric] = {order[0]} | {p["worse"] for p in ranking.get("pairs", [])
                                            if p.get("better") == order[0] and not p.get("significant")}

    def cell(name: str, metric: str) -> str:
        entry = metrics[name].get(metric) or {}
        mean, ci = entry.get("mean"), entry.get("ci95") or [None, None]
        if not isinstance(mean, (int, float)):
            return "<td>n/a</td>"
        text = f"{mean:.4g}"
        if all(isinstance(v, (int, float)) for v in ci):
            text += f' <span class="dim">({ci[0]:.3g}–{ci[1]:.3g})</span>'
        return f"<td><b>{text}</b></td>" if name in leaders.get(metric, ()) else f"<td>{text}</td>"

    better = {m: (summary.get("ranking") or {}).get(m, {}).get("better", "") for m in columns}
    head = "".join(f"<th>{_e(m)} {'↑' if better[m] == 'higher' else '↓' if better[m] == 'lower' else ''}</th>"
                   for m in columns)
    body = "".join(f"<tr><td>{_e(n)}</td>{''.join(cell(n, m) for m in columns)}</tr>" for n in names)
    test = next(iter((summary.get("ranking") or {}).values()), {}).get("test", "")
    note = f"{_e(summary.get('n'))} images · mean (95% interval) · bold: best or not significantly worse ({_e(test)})"
    return (f'<h4>explanation metrics</h4><p class="dim">{note}</p><div class="scroll"><table class="metrics">'
            f'<thead><tr><th>map</th>{head}</tr></thead><tbody>{body}</tbody></table></div>')


def _is_metric(value: Any) -> bool:
    if isinstance(value, str):
        return not value.lower().endswith(_FILE_SUFFIXES)  # file names are shown as images, not numbers
    if isinstance(value, (int, float, bool)) or value is None:
        return True
    return isinstance(value, list) and len(value) <= 6 and all(isinstance(v, (str, int, float)) for v in value)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def loss_svg(values: Sequence[float], label: str | None = None, width: int = 360, height: int = 150) -> str:
    """A loss curve as inline SVG: steps on x, loss on y (log scale when positive and spanning > 2 decades)."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return ""
    log = min(finite) > 0 and max(finite) / min(finite) > 100
    ys = [math.log10(v) if log else v for v in finite]
    lo, hi = min(ys), max(ys)
    span = (hi - lo) or 1.0
    left, right, top, bottom = 56, 10, 14, 26
    w, h = width - left - right, height - top - bottom
    n = len(values) - 1
    points, i_val = [], 0
    for i, v in enumerate(values):
        if math.isfinite(v):
            x = left + w * i / n
            y = top + h * (1 - (ys[i_val] - lo) / span)
            points.append(f"{x:.1f},{y:.1f}")
            i_val += 1
    best = min(finite)
    title = f"{label}: " if label else ""
    caption = f"{title}{len(values)} steps · first {finite[0]:.4g} · last {finite[-1]:.4g} · best {best:.4g}"
    top_label, bottom_label = (f"{10 ** hi:.3g}", f"{10 ** lo:.3g}") if log else (f"{hi:.3g}", f"{lo:.3g}")
    return (f'<figure class="loss"><svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(caption)}">'
            f'<rect x="{left}" y="{top}" width="{w}" height="{h}" class="plot"/>'
            f'<polyline points="{" ".join(points)}" class="curve"/>'
            f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{_e(top_label)}</text>'
            f'<text x="{left - 4}" y="{top + h}" text-anchor="end">{_e(bottom_label)}</text>'
            f'<text x="{left}" y="{height - 8}">0</text>'
            f'<text x="{left + w}" y="{height - 8}" text-anchor="end">{n}</text>'
            f'<text x="{left + w / 2}" y="{height - 8}" text-anchor="middle">step{" · log scale" if log else ""}</text>'
            f'</svg><figcaption>{_e(caption)}</figcaption></figure>')


def _data_uri(path: Path) -> str:
    kind = {".jpg": "jpeg", ".jpeg": "jpeg"}.get(path.suffix.lower(), path.suffix.lower().lstrip("."))
    return f"data:image/{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _thumbnail_uri(path: Path) -> str:
    """A small JPEG of an input photo (inputs can be large and live outside the folder)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            img.thumbnail((THUMB, THUMB), Image.LANCZOS)
            buffer = io.BytesIO()
            img.save(buffer, format="JPEG", quality=85)
    except (UnidentifiedImageError, ValueError) as exc:
        raise OSError(f"cannot read: {exc}") from None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _relative(path: Path, start: Path) -> str:
    import os

    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").lower() or "x"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


_STYLE = """
:root { --fg:#1d2330; --dim:#667085; --line:#e4e7ec; --bg:#f7f8fa; --accent:#3056d3; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg); background:var(--bg); }
header.top { position:sticky; top:0; z-index:2; background:#fff; border-bottom:1px solid var(--line); padding:10px 24px; }
header.top h1 { margin:0 0 4px; font-size:18px; }
header.top nav a { display:inline-block; margin:0 10px 0 0; color:var(--accent); text-decoration:none; font-weight:600; }
main { padding:8px 24px 40px; max-width:1400px; }
h2 { margin:26px 0 10px; font-size:17px; border-bottom:2px solid var(--fg); padding-bottom:3px; }
.n { color:var(--dim); font-weight:400; font-size:12px; }
h2 a.docs { font-size:12px; font-weight:400; margin-left:8px; }
article.run { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px 16px; margin:0 0 16px; }
article.run h3 { margin:0; font-size:15px; }
article.run h3 time { color:var(--dim); font-weight:400; margin-left:8px; }
article.run h4 { margin:12px 0 4px; font-size:12px; text-transform:uppercase; letter-spacing:.05em; color:var(--dim); }
.facts span { margin-right:14px; font-size:12px; color:var(--dim); } .facts b { color:var(--fg); font-weight:600; }
pre.cmdline { margin:6px 0 0; padding:6px 8px; background:var(--bg); border-radius:4px; font-size:12px; white-space:pre-wrap; overflow-wrap:anywhere; }
.row, .panels { display:flex; flex-wrap:wrap; gap:12px; align-items:flex-start; }
figure { margin:0; } .loss figcaption { max-width:360px; } figcaption { font-size:12px; color:var(--dim); max-width:260px; overflow-wrap:anywhere; }
.row img { max-width:224px; max-height:224px; display:block; border:1px solid var(--line); image-rendering:auto; }
.panels figure { flex:0 1 640px; min-width:0; } .panels figcaption { max-width:none; }
.panels img { width:100%; height:auto; display:block; border:1px solid var(--line); }
img.zoomable { cursor:zoom-in; }
.dim { color:var(--dim); } .missing figcaption { color:#b42318; }
.scroll { overflow-x:auto; }
table.metrics { border-collapse:collapse; font-size:12px; }
table.metrics th, table.metrics td { border-bottom:1px solid var(--line); padding:3px 8px; text-align:left; white-space:nowrap; }
table.metrics th { color:var(--dim); font-weight:600; }
svg text { font-size:10px; fill:var(--dim); }
svg .plot { fill:#fbfcfd; stroke:var(--line); } svg .curve { fill:none; stroke:var(--accent); stroke-width:1.6; }
#zoom { position:fixed; inset:0; background:rgba(10,12,16,.88); display:none; align-items:center; justify-content:center; z-index:5; cursor:zoom-out; }
#zoom.on { display:flex; } #zoom img { max-width:96vw; max-height:96vh; image-rendering:pixelated; }
footer { color:var(--dim); font-size:12px; padding:0 24px 24px; }
"""

_SCRIPT = """
(function () {
  var zoom = document.getElementById("zoom"), big = zoom.querySelector("img");
  document.querySelectorAll("img.zoomable").forEach(function (img) {
    img.addEventListener("click", function () { big.src = img.src; zoom.classList.add("on"); });
  });
  zoom.addEventListener("click", function () { zoom.classList.remove("on"); big.removeAttribute("src"); });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") zoom.classList.remove("on"); });
  document.body.dataset.runs = String(document.querySelectorAll("article.run").length);
  document.body.dataset.ok = "1";
  window.addEventListener("load", function () {
    var broken = Array.prototype.filter.call(document.images, function (img) {
      return img.getAttribute("src") && img.complete && img.naturalWidth === 0;
    });
    document.body.dataset.broken = String(broken.length);
  });
})();
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{style}</style></head>
<body>
<header class="top"><h1>{title}</h1><nav>{nav}</nav></header>
<main>
{body}
</main>
<footer>{count} run(s) · generated {generated} by deepprobe report</footer>
<div id="zoom"><img alt="zoomed image"></div>
<script>{script}</script>
</body></html>
"""
