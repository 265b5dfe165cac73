"""A run folder that never loses work: per-rank part files of finished chunks, a configuration fingerprint,
and the merge into one results.jsonl.

    OUT/config.json        {"config": what was run, "invocation": how}; another config into the folder is refused
    OUT/parts/rankR.jsonl  one line per finished chunk {"chunk", "rank", "records", "skipped", "stats"?}; the
                           lines of a unit of work (one chunk, or a pool of them) are appended, flushed and
                           fsynced together: a crash loses at most the unit in flight. "stats" (numbers about
                           the unit, e.g. forward passes) rides on the unit's first line.
    OUT/results.jsonl      one line per image in index order, merged by rank 0 (rewritten, never appended)

A chunk is done when a complete, valid line for it exists in any part file (whatever rank wrote it, so a run
resumed with another number of processes skips it too); the first such line wins, so every image counts once. A
unit whose lines were cut short by a crash is run again whole, and its lines that had made it stay first.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..errors import DeepprobeError

CONFIG = "config.json"
PARTS = "parts"
RESULTS = "results.jsonl"
SUMMARY = "summary.json"
_BLOCK = 1 << 16


def _plain(value):
    """The configuration as JSON would give it back (tuples -> lists, etc.), for comparison."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {json.dumps(a)} there, {json.dumps(b)} now")
    return out


class RunFolder:
    """The files of one resumable data-set run in `root`, seen from process `rank`."""

    def __init__(self, root: str | Path, rank: int = 0):
        self.root = Path(root)
        self.rank = rank
        self.parts = self.root / PARTS
        self.part = self.parts / f"rank{rank}.jsonl"
        self._trimmed = False

    @property
    def results(self) -> Path:
        return self.root / RESULTS

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY

    # ----- configuration ----------------------------------------------------------------------------
    def _stored(self) -> dict | None:
        path = self.root / CONFIG
        if not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            stored = None
        if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
            raise DeepprobeError(f"{path} is not a run configuration: use another --out, or --force to start over")
        return stored

    def stored_config(self) -> dict | None:
        """The configuration the folder's results were computed with (None: no run here yet)."""
        stored = self._stored()
        return stored["config"] if stored else None

    def stored_invocation(self) -> dict | None:
        """How the run was started (command, arguments, cwd...), as recorded by the caller, if it was."""
        stored = self._stored()
        return stored.get("invocation") if stored else None

    def check(self, config: dict, force: bool = False) -> str:
        """"resume" when the folder holds earlier work of this same configuration, "new" when it holds none,
        "replace" when it holds another configuration's work and `force` allows replacing it (else: an error).
        Reads only; `prepare` acts on the answer."""
        stored = self.stored_config()
        if stored is None:
            ours = [p.name for p in (self.results, self.summary) if p.exists()] + \
                   ([PARTS] if any(self.parts.glob("rank*.jsonl")) else [])
            if ours and not force:
                raise DeepprobeError(f"{self.root} holds {', '.join(ours)} but no {CONFIG}: use another --out, "
                                     f"or --force to start over")
            return "replace" if ours else "new"
        if self.holds(config):
            return "resume"  # the same run: resumed, even with --force (re-running never throws work away)
        if not force:
            diff = _differences(stored, _plain(config))
            shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
            raise DeepprobeError(f"{self.root} holds a run with another configuration ({shown}): use another "
                                 f"--out, or --force to start over")
        return "replace"

    def holds(self, config: dict) -> bool:
        """True when the folder's run has exactly this configuration."""
        return self.stored_config() == _plain(config)

    def prepare(self, config: dict, state: str, also_remove: tuple[str, ...] = (), invocation: dict | None = None) -> None:
        """Rank 0, before any rank starts: for state "replace", remove the earlier run's files (and the folders
        in `also_remove`, e.g. its example images); record the configuration (and how the run was started)."""
        if state == "replace":
            for name in (CONFIG, RESULTS, SUMMARY):
                (self.root / name).unlink(missing_ok=True)
            for name in (PARTS, *also_remove):
                shutil.rmtree(self.root / name, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / CONFIG).is_file():
            stored = {"config": _plain(config), "invocation": _plain(invocation)}
            _write_atomic(self.root / CONFIG, json.dumps(stored, indent=2, sort_keys=True) + "\n")

    # ----- finished chunks --------------------------------------------------------------------------
    def _lines(self) -> Iterator[tuple[Path, int, dict]]:
        """(part file, byte offset, parsed line) of every complete, valid line of every part file."""
        for part in sorted(self.parts.glob("rank*.jsonl")):
            offset = 0
            with open(part, "rb") as handle:
                for line in handle:
                    start, offset = offset, offset + len(line)
                    if not line.endswith(b"\n"):
                        break  # torn write (the process died mid-line): that chunk is redone
                    try:
                        entry = json.loads(line)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        continue
                    if isinstance(entry, dict) and isinstance(entry.get("chunk"), int):
                        yield part, start, entry

    def done(self) -> dict[int, tuple[Path, int]]:
        """{chunk id: (part file, offset)} of every finished chunk (first line wins)."""
        found: dict[int, tuple[Path, int]] = {}
        for part, offset, entry in self._lines():
            found.setdefault(entry["chunk"], (part, offset))
        return found

    def append(self, chunk: int, records: list[dict], skipped: list[dict]) -> None:
        """Add one finished chunk to this rank's part file as one line, flushed and fsynced."""
        self.append_unit([(chunk, records, skipped)])

    def append_unit(self, lines: list[tuple[int, list[dict], list[dict]]], stats: dict | None = None) -> None:
        """Add a finished unit, one line per (chunk, records, skipped), in one write, flushed and fsynced; `stats`
        goes on the first line."""
        self.parts.mkdir(parents=True, exist_ok=True)
        if not self._trimmed:
            _trim_torn_tail(self.part)
            self._trimmed = True
        text = ""
        for k, (chunk, records, skipped) in enumerate(lines):
            entry = {"chunk": chunk, "rank": self.rank, "records": records, "skipped": skipped}
            if k == 0 and stats:
                entry["stats"] = stats
            text += json.dumps(entry, separators=(",", ":")) + "\n"
        with open(self.part, "ab") as handle:
            handle.write(text.encode())
            handle.flush()
            os.fsync(handle.fileno())

    # ----- merge ------------------------------------------------------------------------------------
    def chunks(self) -> Iterator[dict]:
        """Every finished chunk's line, in chunk order, read one at a time (memory stays flat)."""
        for chunk, (part, offset) in sorted(self.done().items()):
            with open(part, "rb") as handle:
                handle.seek(offset)
                yield json.loads(handle.readline())

    def write_results(self) -> tuple[int, list[dict], dict]:
        """Rewrite results.jsonl from the part files (one line per image, index order); returns (images, skipped,
        the units' stats summed)."""
        count, skipped, stats = 0, [], {}
        tmp = self.results.with_name(RESULTS + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            for entry in self.chunks():
                for record in entry["records"]:
                    handle.write(json.dumps(record, separators=(",", ":")) + "\n")
                    count += 1
                skipped += entry.get("skipped", [])
                add_stats(stats, entry.get("stats") or {})
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.results)
        return count, skipped, stats

    def records(self) -> Iterator[dict]:
        """The merged results, one record at a time."""
        with open(self.results, encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)

    def write_summary(self, summary: dict) -> Path:
        _write_atomic(self.summary, json.dumps(summary, indent=2, default=_json_default) + "\n")
        return self.summary


def add_stats(total: dict, more: dict) -> dict:
    """Add the numbers of `more` into `total`, nested dicts key by key (units' stats summed over a run)."""
    for key, value in more.items():
        if isinstance(value, dict):
            add_stats(total.setdefault(key, {}), value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value
    return total


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _trim_torn_tail(path: Path) -> None:
    """Cut a half-written last line (left by a crash) so the next append starts on a line of its own."""
    if not path.is_file():
        return
    with open(path, "r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - _BLOCK)
            handle.seek(start)
            block = handle.read(end - start)
            if end == size and block.endswith(b"\n"):
                return
            cut = block.rfind(b"\n")
            if cut >= 0:
                handle.truncate(start + cut + 1)
                return
            end = start
        handle.truncate(0)
