"""`deepprobe rerun SIDECAR.json`: every sidecar is a recipe; rebuild its command line and run it again.

The command line is rebuilt from the sidecar's "command" and "arguments" by asking the click command that
Typer builds which flag each parameter has (positional arguments, repeated options for lists,
`--x/--no-x` for booleans), so it stays right for every command without a hand-kept table. Options that
have no flag (set by a recipe) come back from the sidecar's "options" through a temporary recipe.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from ..errors import DeepprobeError
from . import app
from .common import Common, err_console, user_errors

# Arguments that belong to the rerun, not to the recorded run.
_OUTPUT_FLAGS = {"json", "quiet", "debug", "force", "recipe"}


@dataclasses.dataclass
class Rebuilt:
    argv: list[str]  # the command line (without the program name)
    recipe: str | None = None  # TOML text of options that have no flag, or None


def load_sidecar(path: str | Path) -> dict[str, Any]:
    """A sidecar JSON with at least "command" and "arguments", or a clear error."""
    path = Path(path)
    if not path.is_file():
        raise DeepprobeError(f"{path}: no such sidecar file")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DeepprobeError(f"{path}: not a JSON sidecar ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("command"), str) \
            or not isinstance(record.get("arguments"), dict):
        raise DeepprobeError(f"{path}: not a deepprobe sidecar (needs \"command\" and \"arguments\")")
    return record


def find_command(root, words: list[str]):
    """Walk groups by the recorded command words ("patch train"); return the command and its argv prefix.

    Duck-typed (`commands`, `param_type_name`): typer may bring its own copy of click."""
    node, prefix = root, []
    for word in words:
        if hasattr(node, "commands"):
            if word not in node.commands:
                raise DeepprobeError(f"this deepprobe has no `{' '.join(words)}` command to rerun")
            node = node.commands[word]
            prefix.append(word)
        # a one-command app has no group level: its name is not typed
    return node, prefix


def command_line(typer_app: typer.Typer, record: dict[str, Any], *, out: str | None = None,
                 device: str | None = None, extra: list[str] | None = None, warn: bool = True) -> Rebuilt:
    """The argv that repeats the recorded run (same seed, same device unless overridden)."""
    words = record["command"].split()
    cmd, argv = find_command(typer.main.get_command(typer_app), words)
    args = dict(record["arguments"])
    base = Path(record["cwd"]) if isinstance(record.get("cwd"), str) else None
    args = {k: _localize(v, base) for k, v in args.items()}
    args["device"] = device or record.get("device") or args.get("device")
    out_dir = out if out is not None else args.get("out")
    if out is None and base is not None and out_dir and not Path(out_dir).is_absolute():
        out_dir = str(base / out_dir)  # beside the original outputs, wherever rerun is called from
    args["out"] = out_dir
    extra = list(extra or [])
    overridden = _named_in(cmd, extra)

    params = {p.name: p for p in cmd.params}
    common = {f.name for f in dataclasses.fields(Common)}
    unknown = [k for k in args if k not in params and k not in common]
    if unknown and warn:
        err_console.print(f"[yellow]warning:[/yellow] `deepprobe {escape(record['command'])}` no longer takes "
                          f"{escape(', '.join(unknown))}; rerunning without")

    options, positionals = [], []
    for param in cmd.params:
        name = param.name
        if name not in args or name in _OUTPUT_FLAGS or name in overridden:
            continue
        value = args[name]
        if param.param_type_name == "argument":
            if value is not None:
                positionals += [_text(v) for v in value] if isinstance(value, (list, tuple)) else [_text(value)]
        elif param.param_type_name == "option":
            options += _option_tokens(param, value)

    recipe = _flagless_options(record, params, overridden)
    return Rebuilt(argv + options + extra + (["--", *positionals] if positionals else []), recipe)


def _option_tokens(param, value: Any) -> list[str]:
    """The tokens that give `param` this value: `--x V`, `--x V --x W` for lists, `--x`/`--no-x` for flags."""
    if value is None or (isinstance(value, (list, tuple)) and not value and param.multiple):
        return []
    flag = _flag(param.opts)
    if getattr(param, "count", False):  # -v -v
        return [flag] * int(value)
    if param.is_flag:
        if param.secondary_opts:  # --x/--no-x
            return [flag] if value else [_flag(param.secondary_opts)]
        if bool(value):
            return [flag]
        if not param.default:
            return []
        raise DeepprobeError(f"cannot express {param.name}={value!r} with {flag} on the command line")
    if param.multiple:
        items = value if isinstance(value, (list, tuple)) else [value]
        return [tok for item in items for tok in (flag, _text(item))]
    if isinstance(value, (list, tuple)):  # nargs > 1
        return [flag, *(_text(v) for v in value)]
    return [flag, _text(value)]


def _flag(opts: list[str]) -> str:
    longs = [o for o in opts if o.startswith("--")]
    return max(longs, key=len) if longs else opts[0]


def _text(value: Any) -> str:
    """repr() of a float round-trips exactly (0.03137254901960784 is 8/255 again)."""
    return repr(value) if isinstance(value, float) else str(value)


def _named_in(cmd, extra: list[str]) -> set[str]:
    """Parameter names the extra tokens set (their recorded values are dropped, the typed ones win)."""
    by_flag = {flag: p.name for p in cmd.params if p.param_type_name == "option"
               for flag in (*p.opts, *p.secondary_opts)}
    names = set()
    for token in extra:
        flag = token.split("=", 1)[0]
        if flag.startswith("-"):
            if flag not in by_flag:
                raise DeepprobeError(f"{flag} is not an option of this command")
            names.add(by_flag[flag])
    return names


def _localize(value: Any, base: Path | None) -> Any:
    """Relative paths that exist only relative to the recorded working folder become absolute."""
    if base is None or base == Path.cwd():
        return value
    if isinstance(value, list):
        return [_localize(v, base) for v in value]
    if isinstance(value, str) and value and not Path(value).is_absolute() and not Path(value).exists() \
            and (base / value).exists():
        return str(base / value)
    return value


def _flagless_options(record: dict, params: dict, overridden: set[str]) -> str | None:
    """TOML for recorded options that the command line cannot set (no flag), or None when there are none."""
    from ..options import options_for

    options = record.get("options")
    if not isinstance(options, dict):
        return None
    group = record["command"].split()[0]
    options_cls = options_for(group)
    if options_cls is None:
        return None
    defaults = {f.name: f.default for f in dataclasses.fields(options_cls)
                if f.default is not dataclasses.MISSING}
    keep = {k: v for k, v in options.items()
            if k not in params and k not in overridden and k in defaults and v is not None and v != defaults[k]}
    if not keep:
        return None
    lines = [f'command = "{group}"', 'description = "options restored by deepprobe rerun"', "", "[options]"]
    lines += [f"{key} = {_toml(value)}" for key, value in keep.items()]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def trust_needed(typer_app: typer.Typer, record: dict[str, Any], sidecar: str | Path,
                 extra: list[str] | None = None) -> str | None:
    """Why running this sidecar needs --trust, or None. A sidecar is a file anyone can write: its `python:` model
    spec imports and calls code it names, and its recorded working folder (where relative inputs are read and
    outputs written) can point anywhere. Both are replayed only on trust, unless the rerun overrides them: a
    typed --model, or a recorded folder that is the current one or inside the sidecar's own folder."""
    cmd, _ = find_command(typer.main.get_command(typer_app), record["command"].split())
    typed = _named_in(cmd, list(extra or []))
    spec = record["arguments"].get("model")
    if "model" not in typed and isinstance(spec, str) and spec.startswith("python:"):
        return f"its model {spec} runs Python code the file names"
    cwd = record.get("cwd")
    if isinstance(cwd, str):
        recorded = Path(cwd).resolve()
        if recorded != Path.cwd().resolve() and not recorded.is_relative_to(Path(sidecar).resolve().parent):
            return (f"it ran in {cwd}, outside the sidecar's folder, and its relative paths would be read and written "
                    "there (rerunning from that folder needs no --trust)")
    return None


def rerun(typer_app: typer.Typer, record: dict[str, Any], *, out: str | None = None, device: str | None = None,
          extra: list[str] | None = None, **flags: bool) -> int:
    """Run the recorded command again in this process; returns its exit code."""
    return execute(typer_app, command_line(typer_app, record, out=out, device=device, extra=extra), **flags)


def execute(typer_app: typer.Typer, rebuilt: Rebuilt, *, json_summary: bool = False, quiet: bool = False,
            debug: bool = False) -> int:
    """Invoke a rebuilt command line (flagless options through a temporary recipe file)."""
    argv = list(rebuilt.argv)
    flags = [f for f, on in (("--json", json_summary), ("--quiet", quiet), ("--debug", debug)) if on]
    split = argv.index("--") if "--" in argv else len(argv)
    recipe_file = None
    try:
        if rebuilt.recipe is not None:
            handle, recipe_file = tempfile.mkstemp(prefix="deepprobe-rerun-", suffix=".toml")
            with os.fdopen(handle, "w") as fh:
                fh.write(rebuilt.recipe)
            flags += ["--recipe", recipe_file]
        return _invoke(typer_app, argv[:split] + flags + argv[split:])
    finally:
        if recipe_file is not None:
            os.unlink(recipe_file)


def _invoke(typer_app: typer.Typer, argv: list[str]) -> int:
    # standalone mode: click shows usage errors itself and ends with SystemExit(code) either way
    root = typer.main.get_command(typer_app)
    try:
        root.main(args=argv, prog_name="deepprobe", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def shell_line(argv: list[str]) -> str:
    import shlex

    return "deepprobe " + " ".join(shlex.quote(a) for a in argv)


@app.command("rerun", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def rerun_cmd(ctx: typer.Context,
              sidecar: str = typer.Argument(..., help="A JSON sidecar written beside an output (outputs/NAME.json)."),
              out: str = typer.Option(None, "--out", "-o", help="Folder for the new outputs (default: the original's)."),
              device: str = typer.Option(None, "--device", help="Run on this device instead of the recorded one."),
              show: bool = typer.Option(False, "--print", help="Only print the rebuilt command line."),
              trust: bool = typer.Option(False, "--trust", help="Run a sidecar whose model is python: code, or whose "
                                                                "working folder lies outside the sidecar's folder: "
                                                                "only for files you made or trust."),
              json_summary: bool = typer.Option(False, "--json", help="Print the rerun's JSON summary on stdout."),
              quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or tables."),
              debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")):
    """Reproduce a run from its sidecar: same command, options, seed and device; new outputs never overwrite.

    Options after the sidecar change the rerun, e.g. `deepprobe rerun outputs/cat_fool.json --steps 100`. A sidecar
    whose model is python: code, or that ran in a folder outside its own (other than the current one), is refused
    unless --trust: a sidecar from someone else would run their code or use their paths."""
    with user_errors(debug):
        record = load_sidecar(sidecar)
        rebuilt = command_line(app, record, out=out, device=device, extra=ctx.args)
        if show:
            typer.echo(shell_line(rebuilt.argv))
            if rebuilt.recipe:
                typer.echo("# plus options without a flag, passed as a recipe:\n" + rebuilt.recipe, nl=False)
            return
        reason = None if trust else trust_needed(app, record, sidecar, ctx.args)
        if reason:
            raise DeepprobeError(f"{sidecar}: {reason}; rerun it with --trust only if you trust the file "
                                 "(--print shows the command)")
        if not quiet and not json_summary:
            err_console.print(f"[dim]{escape(shell_line(rebuilt.argv))}[/dim]", soft_wrap=True)
        code = execute(app, rebuilt, json_summary=json_summary, quiet=quiet, debug=debug)
    if code:
        raise typer.Exit(code)
