"""What every command shares: common options, option/recipe resolution, outputs with sidecars, errors.

Nothing here imports torch at module level, so `deepprobe --help` stays fast.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import inspect
import json
import os
import platform
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import typer
from rich.markup import escape

from .. import __version__
from ..errors import DeepprobeError
from ..options import load_recipe, options_for, resolve
from ..options.ranges import options_module
from .console import err_console, out_console  # noqa: F401 - commands import both from here

DEFAULT_MODEL = "efficientnet_lite0"  # kept equal to deepprobe.models.DEFAULT_MODEL (checked in tests)


@dataclasses.dataclass
class Common:
    """Options every command takes (some only where they make sense)."""

    model: str = DEFAULT_MODEL
    weights: str | None = None
    random_init: bool = False
    input_size: str | None = None
    offline: bool = False
    normalize: str | None = None
    dataset: str | None = None
    threat_model: str | None = None
    device: str = "auto"
    amp: bool = False
    seed: int = 0
    out: str = "outputs"
    recipe: str | None = None
    json: bool = False
    quiet: bool = False
    force: bool = False
    debug: bool = False


def _common_parameters(uses_model: bool, uses_recipe: bool) -> list[inspect.Parameter]:
    kw = inspect.Parameter.KEYWORD_ONLY
    params = []

    def add(name, annotation, option):
        params.append(inspect.Parameter(name, kw, default=option, annotation=annotation))

    if uses_model:
        add("model", str, typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model spec (see `deepprobe models`).",
                                       rich_help_panel="Model"))
        add("weights", str | None, typer.Option(None, "--weights", "-w", help="Local weights file for timm:/torchvision:/python: "
                                                "specs (without it timm:/torchvision: load their pretrained weights); "
                                                "robustbench: a checkpoint or a model_dir.",
                                                rich_help_panel="Model"))
        add("random_init", bool, typer.Option(False, "--random-init", help="timm:/torchvision:/robustbench:/bundled: random weights "
                                              "instead of pretrained ones (every output then says \"random weights\").",
                                              rich_help_panel="Model"))
        add("input_size", str | None, typer.Option(None, "--input-size", help="The model's input size, N or H,W "
                                                   "(default: its own, e.g. 224; 32 for a CIFAR model).",
                                                   rich_help_panel="Model"))
        add("offline", bool, typer.Option(False, "--offline", help="Never download: pretrained weights must be in the "
                                          "local caches (as with HF_HUB_OFFLINE=1).", rich_help_panel="Model"))
        add("normalize", str | None, typer.Option(None, "--normalize", help="Override input normalization: imagenet, half, none or 'm,m,m/s,s,s'.",
                                                  rich_help_panel="Model"))
        add("dataset", str | None, typer.Option(None, "--dataset", help="robustbench: models: the zoo's data set, "
                                                "cifar10 (default), cifar100 or imagenet.", rich_help_panel="Model"))
        add("threat_model", str | None, typer.Option(None, "--threat-model", help="robustbench: models: Linf "
                                                     "(default), L2 or corruptions.", rich_help_panel="Model"))
        add("device", str, typer.Option("auto", "--device", help="auto|cpu|cuda|mps (auto picks CUDA when present).",
                                        rich_help_panel="Model"))
        add("amp", bool, typer.Option(False, "--amp", help="On CUDA: bfloat16 mixed precision in optimizations and "
                                                           "channels-last memory; ignored on other devices.",
                                      rich_help_panel="Model"))
    add("seed", int, typer.Option(0, "--seed", help="Random seed; the same seed on the same device repeats a run.",
                                  rich_help_panel="Run"))
    add("out", str, typer.Option("outputs", "--out", "-o", help="Folder for results (created if missing).",
                                 rich_help_panel="Run"))
    if uses_recipe:
        add("recipe", str | None, typer.Option(None, "--recipe", help="Preset NAME (see `deepprobe recipes`) or FILE.toml; typed options win.",
                                               rich_help_panel="Run"))
    add("json", bool, typer.Option(False, "--json", help="Print one JSON summary on stdout (with `outputs`).",
                                   rich_help_panel="Run"))
    add("quiet", bool, typer.Option(False, "--quiet", "-q", help="No progress bars or tables.", rich_help_panel="Run"))
    add("force", bool, typer.Option(False, "--force", help="Overwrite existing output files.", rich_help_panel="Run"))
    add("debug", bool, typer.Option(False, "--debug", help="Show full tracebacks on errors.", rich_help_panel="Run"))
    return params


def opt(options_cls, field: str, *flags: str, help: str = "", **kwargs) -> Any:  # noqa: A002 - typer's name
    """A Typer option whose default lives in the command's Options dataclass and whose valid range is declared
    beside it (RANGES); --help shows both."""
    default = {f.name: f for f in dataclasses.fields(options_cls)}[field].default
    valid = getattr(options_module(options_cls), "RANGES", {}).get(field, "(-inf, inf)")
    # Rich reads "[default: x]" (and "[1, inf)") as markup and drops it: escape the bracket.
    shown = " Range: " + valid.replace("[", "\\[") + "." if valid != "(-inf, inf)" else ""
    shown += f" \\[default: {default}]" if default not in (None, dataclasses.MISSING) else ""
    flags = flags or ("--" + field.replace("_", "-"),)
    return typer.Option(None, *flags, help=help + shown, show_default=False, **kwargs)


class Run:
    """One invocation: resolved options, the model, outputs written so far, failures and the summary."""

    def __init__(self, command: str, common: Common, arguments: dict[str, Any]):
        self.command = command
        self.common = common
        self.arguments = arguments
        self.started = time.perf_counter()
        # Identify one invocation across all its sidecars (`deepprobe report` groups outputs by it).
        self.run_id = uuid.uuid4().hex[:12]
        self.started_at = datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="milliseconds")
        self.outputs: list[Path] = []
        self.sidecars: list[tuple[Path, dict]] = []
        self.results: list[dict] = []
        self.failed: list[dict] = []
        self.interrupted = False  # Ctrl-C stopped an optimization (best result kept): finish() exits 130
        self.summary: dict[str, Any] = {}
        self._bundle = None
        self.options = None  # the command's resolved Options dataclass (defaults < recipe < typed)
        self.out_dir = Path(common.out)

    # ----- model and device -------------------------------------------------------------------
    def bundle(self):
        """The ModelBundle for --model/--weights/--device (loaded once)."""
        if self._bundle is None:
            from ..device import seed_everything
            from ..models import load_model
            from ..options.values import parse_input_size

            seed_everything(self.common.seed)
            if self.common.offline:
                os.environ["HF_HUB_OFFLINE"] = "1"  # also for the hub client and transformers
            with self.status(f"loading {self.common.model}") as spinner:
                def announce(message: str) -> None:  # a download: its own progress bar replaces the spinner
                    if spinner is not None:
                        spinner.stop()
                    err_console.print(escape(message))

                self._bundle = load_model(self.common.model, self.common.weights, self.common.device,
                                          normalize=self.common.normalize,
                                          input_size=parse_input_size(self.common.input_size),
                                          random_init=self.common.random_init,
                                          offline=True if self.common.offline else None, announce=announce,
                                          dataset=self.common.dataset, threat_model=self.common.threat_model)
            if self._bundle.notes.get("labels"):  # e.g. ImageNet names put on a user's 1000-way network
                err_console.print(f"[yellow]note:[/yellow] class names {escape(self._bundle.notes['labels'])}; "
                                  "name them with `labels = [...]` in the model's module")
            if self.common.amp and self._bundle.device.type == "cuda":
                import torch

                self._bundle.notes["amp"] = True  # engine.optimize autocasts to bfloat16 when it sees this
                self._bundle.net.to(memory_format=torch.channels_last)
            elif self.common.amp:
                err_console.print(f"[yellow]note:[/yellow] --amp works on CUDA only; on {self._bundle.device.type} "
                                  "this run is float32 as without it")
        return self._bundle

    def layers_for(self, asked: list[str], defaults: tuple[str, ...], deepest_only: bool = True) -> list[str]:
        """`asked`, or, when those are the EfficientNet-Lite default names and the model lacks them, its own stage
        outputs (models/layers.default_layers), with a note saying which."""
        from ..models.layers import default_layers

        chosen = default_layers(self.bundle(), asked, defaults, deepest_only)
        if chosen != list(asked) and self.show_progress:
            err_console.print(f"note: {self._bundle.spec} has no {', '.join(asked)} (the EfficientNet-Lite default); "
                              f"using {', '.join(chosen)} (stage output at stride <= 16)", markup=False)
        return chosen

    @property
    def show_progress(self) -> bool:
        return not (self.common.quiet or self.common.json)

    def status(self, message: str):
        """A spinner while something slow happens (silent with --quiet/--json)."""
        import contextlib

        return err_console.status(message) if self.show_progress else contextlib.nullcontext()

    def progress(self):
        from .progress import make_progress

        return make_progress(enabled=self.show_progress)

    # ----- outputs ----------------------------------------------------------------------------
    def path_for(self, name: str) -> Path:
        from ..io import unique_path

        return unique_path(self.out_dir / name, self.common.force)

    def save_image(self, image, name: str, result: dict | None = None, replace: bool = False) -> Path:
        """Save a PNG under --out (never overwriting, unless --force or `replace` for a file this command owns
        and redraws, e.g. a resumed run's plot) and queue its JSON sidecar."""
        from ..io import save_png

        path = save_png(image, self.out_dir / name, self.common.force or replace)
        self._record(path, result)
        return path

    def save_file(self, writer: Callable[[Path], None], name: str, result: dict | None = None,
                  sidecar: bool = True) -> Path:
        """Save a non-PNG output (plot, .npy, HTML) through `writer(path)`; sidecar optional."""
        path = self.path_for(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(path)
        if sidecar:
            self._record(path, result)
        else:
            self.outputs.append(path)
        return path

    def _record(self, path: Path, result: dict | None) -> None:
        self.outputs.append(path)
        self.sidecars.append((path, result or {}))

    def add_result(self, result: dict) -> None:
        self.results.append(result)

    def fail(self, item: str, reason: str) -> None:
        """Record a per-input failure; the rest of the batch goes on."""
        self.failed.append({"input": str(item), "error": reason})
        print_error(reason if str(item) in reason else f"{item}: {reason}")

    # ----- the record of the run --------------------------------------------------------------
    def model_config(self) -> dict[str, Any]:
        """What a run's results depend on about the model (a resumed run's config must match); random weights and
        an input size appear only when asked for, so folders of earlier runs still resume."""
        bundle = self.bundle()
        config = {"model": bundle.spec, "weights": self.common.weights, "normalize": self.common.normalize}
        if bundle.random_init:
            config["random_init"] = True
        if self.common.input_size:
            config["input_size"] = list(bundle.input_size)
        return config

    def record(self) -> dict[str, Any]:
        bundle = self._bundle
        record = {
            "command": self.command,
            "arguments": self.arguments,
            "model": bundle.spec if bundle is not None else self.arguments.get("model"),
            # where the weights came from: a file, "pretrained ...", "random weights" (said in every output)
            "weights": (bundle.origin or bundle.weights) if bundle is not None else self.common.weights,
            "random_init": bundle.random_init if bundle is not None else self.common.random_init,
            "input_size": list(bundle.input_size) if bundle is not None and bundle.input_size else None,
            "labels": bundle.notes.get("labels") if bundle is not None else None,  # where assumed, said so
            "device": str(bundle.device) if bundle is not None else None,
            "seed": self.common.seed,
            "versions": versions(),
            "elapsed_s": round(time.perf_counter() - self.started, 3),
            "run_id": self.run_id,
            "started": self.started_at,
            "cwd": str(Path.cwd()),  # `deepprobe rerun` resolves relative input paths against it
        }
        if dataclasses.is_dataclass(self.options):
            # every resolved option, also those without a CLI flag, so `deepprobe rerun` can restore them
            record["options"] = _plain(dataclasses.asdict(self.options))
        record.update(self.summary)
        return record

    def finish(self) -> int:
        """Write sidecars, print the JSON summary if asked; exit code 130 when interrupted, 1 when some inputs
        failed."""
        from ..io import write_json

        base = self.record()
        for path, result in self.sidecars:
            sidecar = dict(base, output=str(path), result=result)
            written = write_json(sidecar, path.with_suffix(".json"), force=True)
            self.outputs.append(written)
        if self.common.json:
            summary = dict(base, results=self.results, failed=self.failed, outputs=[str(p) for p in self.outputs])
            sys.stdout.write(json.dumps(summary, default=_jsonable) + "\n")
        if self.failed:
            err_console.print(f"[yellow]{len(self.failed)} input(s) failed:[/yellow] "
                              + escape(", ".join(f["input"] for f in self.failed)))
        return 130 if self.interrupted else 1 if self.failed else 0


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {"deepprobe": __version__, "python": platform.python_version()}
    for name in ("torch", "torchvision", "timm", "captum"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found


def print_error(message: str) -> None:
    """One red `error:` line on stderr. The message is escaped: a path such as `a[red]b` is printed as it is,
    not read as Rich markup."""
    err_console.print(f"[red]error:[/red] {escape(message)}")


def exit_on_user_error(exc: DeepprobeError, debug: bool):
    """A user's mistake ends a command with one error line and exit 2 (an error may carry its own `exit_code`, e.g.
    a torchrun rank stopped because another failed); with --debug, the traceback instead."""
    if debug:
        raise exc
    print_error(str(exc))
    raise typer.Exit(getattr(exc, "exit_code", 2)) from None


@contextlib.contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """`exit_on_user_error` around the body of a command that takes no common options (report, rerun)."""
    try:
        yield
    except DeepprobeError as exc:
        exit_on_user_error(exc, debug)


# "patch train" -> "patch": every registered command with options and the options module it reads (the test
# that walks every option's range finds the commands here).
COMMAND_OPTIONS: dict[str, str] = {}


def command(app: typer.Typer, name: str, *, uses_model: bool = True, help: str | None = None,  # noqa: A002
            options: bool = True, options_name: str | None = None, **typer_kwargs) -> Callable:
    """Register `func(run, **params)` as a subcommand with the common options added to its signature.

    Parameters named like fields of the command's Options dataclass are resolved (defaults < recipe <
    typed) before `func` sees them. `options_name` (for a sub-app's commands, e.g. "patch" for
    `patch train`) names the Options module and the recipes' command instead of `name`; the run is then
    recorded as "options_name name".
    """
    group = options_name or name
    recorded = f"{options_name} {name}" if options_name else name

    def decorate(func: Callable) -> Callable:
        options_cls = options_for(group) if options else None
        if options_cls is not None:
            COMMAND_OPTIONS[recorded] = group
        own = [p for p in inspect.signature(func).parameters.values() if p.name != "run"]
        common_params = _common_parameters(uses_model, options_cls is not None)
        common_names = {p.name for p in common_params}

        @functools.wraps(func)
        def wrapper(**kwargs):
            common = Common(**{k: kwargs.pop(k) for k in list(kwargs) if k in common_names})
            try:
                resolved = None
                if options_cls is not None:
                    kwargs, resolved, model = _resolve_options(group, options_cls, common.recipe, kwargs)
                    if uses_model and common.input_size is None:
                        common.input_size = model.get("input_size")  # a recipe's, unless typed
                run = Run(recorded, common, {**_plain(kwargs), **_plain(dataclasses.asdict(common))})
                run.options = resolved
                code = func(run, **kwargs)
                code = run.finish() if code is None else code
            except DeepprobeError as exc:
                exit_on_user_error(exc, common.debug)
            except KeyboardInterrupt:
                if common.debug:
                    raise
                err_console.print("[yellow]interrupted[/yellow]")
                raise typer.Exit(130) from None
            except (typer.Exit, typer.Abort, SystemExit):
                raise
            except Exception as exc:  # noqa: BLE001 - the one place that turns crashes into one line
                if common.debug:
                    raise
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                print_error(f"{type(exc).__name__}: {message} (run with --debug for details)")
                raise typer.Exit(1) from None
            if code:
                raise typer.Exit(code)

        wrapper.__signature__ = inspect.Signature(own + common_params)
        del wrapper.__wrapped__
        app.command(name, help=reflow(help or func.__doc__), **typer_kwargs)(wrapper)
        return func

    return decorate


def reflow(doc: str | None) -> str | None:
    """A docstring as --help text: Rich keeps every newline, so the source's hard-wrapped lines would break
    mid-sentence at any terminal width. Lines of a paragraph are joined; blank lines and list items ("- ")
    keep their breaks."""
    if not doc:
        return doc
    paragraphs = []
    for block in inspect.cleandoc(doc).split("\n\n"):
        lines = [line.strip() for line in block.splitlines()]
        out: list[str] = []
        for line in lines:
            if out and not line.startswith(("- ", "* ")):
                out[-1] += " " + line
            else:
                out.append(line)
        paragraphs.append("\n".join(out))
    return "\n\n".join(paragraphs)


def _resolve_options(name: str, options_cls, recipe_name: str | None, kwargs: dict):
    """Replace the typed option values by resolved ones; also return the whole Options object."""
    fields = {f.name for f in dataclasses.fields(options_cls)}
    recipe = load_recipe(recipe_name, name) if recipe_name else None
    given = {k: v for k, v in kwargs.items() if k in fields}
    resolved = resolve(options_cls, recipe.options if recipe else None, given, str(recipe.path) if recipe else "recipe")
    values = dataclasses.asdict(resolved)  # checked against the options' RANGES (deepprobe/options/ranges.py)
    return {**kwargs, **{k: values[k] for k in given}}, resolved, recipe.model if recipe else {}


def _plain(values: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()
            if isinstance(v, (str, int, float, bool, list, tuple, type(None), Path))}
