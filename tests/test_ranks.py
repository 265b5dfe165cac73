"""Ranks under torchrun (2 CPU processes, gloo) on a tiny untrained CNN: work handed out on demand, a rank killed or
hung mid-run, and resuming afterwards to the same per-image results as one process.

The data: 12 small photos (variants of examples/), a batch per image. Images labelled with the model's own class
are attacked (APGD-CE with an eps below half an 8-bit level, so no image ever breaks and every step runs: a unit of
work takes a steady while); images labelled with another class are wrong already and cost nothing. Every test here
starts torchrun, so all are slow.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from deepprobe.cli import app

ROOT = Path(__file__).resolve().parent.parent
MODEL = ["--model", "python:tests.tiny_classifier:build", "--device", "cpu"]
ATTACK = ["--attack", "apgd-ce", "--eps", "0.001", "--batch-size", "1", "--workers", "0", "--seed", "2"]
TIMING = {"seconds", "attack_seconds", "wall_s", "images_per_s", "attack_seconds_per_image", "processed_now",
          "done_before", "outputs", "ranks", "world_size"}
HARD_UNITS = (0, 2, 4)  # with --pool 2: the units whose images are attacked (a fixed shard would give all to rank 0)

pytestmark = pytest.mark.slow


def stable(value):
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def results(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


@pytest.fixture(scope="module")
def data(tmp_path_factory, examples) -> dict[str, Path]:
    """12 photos; manifests `all` (every image attacked) and `skewed` (only the images of HARD_UNITS)."""
    import deepprobe as dp

    root = tmp_path_factory.mktemp("ranks")
    photos = sorted(examples.glob("*.jpg"))
    paths = []
    for k in range(12):
        image = Image.open(photos[k % len(photos)]).convert("RGB").resize((96, 96)).rotate(90 * (k // len(photos)))
        paths.append(root / f"{k:02d}.png")
        image.save(paths[-1])
    probe = dp.load_model(MODEL[1], device="cpu")
    own = [int(probe.predict(probe.load_image(p)).argmax()) for p in paths]
    out = {}
    for name, attacked in (("all", range(12)), ("skewed", [i for u in HARD_UNITS for i in (2 * u, 2 * u + 1)])):
        manifest = root / f"{name}.csv"
        manifest.write_text("path,label\n" + "".join(
            f"{p},{own[k] if k in attacked else (own[k] + 1) % 10}\n" for k, p in enumerate(paths)))
        out[name] = manifest
    return out


def one_process(data: Path, out: Path, *args: str) -> Path:
    res = CliRunner().invoke(app, ["robustness", str(data), *MODEL, *ATTACK, *args, "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    return out


def torchrun(data: Path, out: Path, *args: str) -> subprocess.Popen:
    """torchrun with 2 ranks; its stderr goes to OUT.err (read while it runs with `said`)."""
    with open(out.with_suffix(".err"), "w") as err:
        return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                 "2", "-m", "deepprobe", "robustness", str(data), *MODEL, *ATTACK, *args, "--out",
                                 str(out), "--json"], env=_env(), stdout=subprocess.PIPE, stderr=err, text=True)


def said(out: Path) -> str:
    return out.with_suffix(".err").read_text()


def rank_pids(parent: int) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            for var in env:
                if var.startswith(b"RANK="):
                    found[int(var[5:])] = int(entry.name)
    return found


def lines(out: Path, rank: int) -> int:
    part = out / "parts" / f"rank{rank}.jsonl"
    return part.read_text().count("\n") if part.is_file() else 0


def wait_for(condition, proc: subprocess.Popen, what: str, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, f"torchrun ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def error_lines(stderr: str, rank: int) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"error: rank {rank} stops:")]


def test_work_goes_to_whichever_rank_is_free(data, tmp_path):
    """On data where every other unit is hard, both ranks get hard units (a fixed shard c % 2 would give them all
    to rank 0 and leave rank 1 idle); pooled results equal one process's; the summary says how idle each rank was."""
    reference = one_process(data["skewed"], tmp_path / "one", "--steps", "60", "--pool", "2")
    out = tmp_path / "two"
    proc = torchrun(data["skewed"], out, "--steps", "60", "--pool", "2")
    stdout, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, said(out)[-3000:]
    who = {json.loads(line)["chunk"] // 2: rank for rank in (0, 1)
           for line in (out / "parts" / f"rank{rank}.jsonl").read_text().splitlines()}
    assert sorted(who) == list(range(6)) and {who[u] for u in HARD_UNITS} == {0, 1}
    summary = json.loads(next(line for line in stdout.splitlines() if line.startswith("{")))
    assert [r["rank"] for r in summary["ranks"]] == [0, 1] and sum(r["units"] for r in summary["ranks"]) == 6
    assert all(0 <= r["idle_fraction"] <= 1 and r["busy_s"] > 0 for r in summary["ranks"])
    assert summary["config"]["pool"] == 2
    assert stable(results(out)) == stable(results(reference))
    assert stable(json.loads((out / "summary.json").read_text())) == \
        stable(json.loads((reference / "summary.json").read_text()))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    return one_process(data["all"], tmp_path_factory.mktemp("ref") / "run", "--steps", "40", "--pool", "1")


def _resumed_equals(out: Path, reference: Path) -> None:
    res = CliRunner().invoke(app, ["robustness", "--resume", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert stable(results(out)) == stable(results(reference))


def test_a_killed_rank_ends_every_rank_with_one_line(data, reference, tmp_path):
    """SIGKILL on rank 1 mid-run: torchrun stops rank 0 (SIGTERM), which says so in one line; nothing finished is
    lost, and the run resumes to the same results as one process."""
    out = tmp_path / "killed"
    proc = torchrun(data["all"], out, "--steps", "40", "--pool", "1")
    wait_for(lambda: lines(out, 0) >= 1 and lines(out, 1) >= 1, proc, "a finished batch on each rank")
    os.kill(rank_pids(proc.pid)[1], signal.SIGKILL)
    proc.communicate(timeout=120)
    stderr = said(out)
    assert proc.returncode != 0
    mine = error_lines(stderr, 0)
    assert len(mine) == 1 and "SIGTERM" in mine[0] and "run the same command again" in mine[0], stderr[-3000:]
    assert len([line for line in stderr.splitlines() if line.startswith("error:")]) == 1  # rank 1 was killed
    assert not (out / "results.jsonl").exists() and lines(out, 0) + lines(out, 1) < 12
    _resumed_equals(out, reference)


def test_a_hung_rank_ends_the_run_after_the_rank_timeout(data, reference, tmp_path):
    """A rank that stops (SIGSTOP: no heartbeat, no progress) would leave the others waiting at the end for the
    process group's timeout; with --rank-timeout 3 rank 0 does the remaining work, waits 3 s and stops with one
    line, and rank 1 (continued: stopped by torchrun, or finding that rank 0 gave up) says so in one line too."""
    out = tmp_path / "hung"
    proc = torchrun(data["all"], out, "--steps", "40", "--pool", "1", "--rank-timeout", "3")
    wait_for(lambda: lines(out, 1) >= 1, proc, "a finished batch on rank 1")
    hung = rank_pids(proc.pid)[1]
    os.kill(hung, signal.SIGSTOP)
    started = time.monotonic()
    try:
        wait_for(lambda: (out / "parts" / "rank0.jsonl").is_file() and lines(out, 0) + lines(out, 1) >= 11, proc,
                 "rank 0 to take over the remaining work", 300)
        wait_for(lambda: error_lines(said(out), 0), proc, "rank 0 to give up on rank 1", 120)
    finally:
        os.kill(hung, signal.SIGCONT)
    proc.communicate(timeout=120)
    stderr = said(out)
    assert time.monotonic() - started < 120
    assert proc.returncode != 0
    mine, theirs = error_lines(stderr, 0), error_lines(stderr, 1)
    assert len(mine) == 1 and "rank 1 stopped answering" in mine[0] and "finished batches are kept" in mine[0], \
        stderr[-3000:]
    assert len(theirs) == 1 and ("SIGTERM" in theirs[0] or "rank 0 gave up" in theirs[0]), stderr[-3000:]
    assert len([line for line in stderr.splitlines() if line.startswith("error:")]) == 2  # one line per rank
    # every unit but the one rank 1 held (12: continued before torchrun's SIGTERM came, it finished that one too)
    assert lines(out, 0) >= 10 and lines(out, 0) + lines(out, 1) in (11, 12)
    _resumed_equals(out, reference)
