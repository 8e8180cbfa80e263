"""Cold start-up cost of the CLI, as a ratio to a minimal one-command Typer app.

Runs each command in a fresh interpreter (nothing imported yet; the OS file cache and the
bytecode caches are warmed by one untimed run of each first), takes the median of N runs,
and divides by the median of a minimal one-command Typer app's `--help` in the same
environment, measured in the same run and interleaved with the commands, so the ratio
does not depend on how fast or busy the machine is today. The judged figure is wall
time; CPU time (user + system of the child) is printed beside it because it is steadier
on a shared machine.

    .venv/bin/python bench/startup.py            # median of 5, target ratio <= 1.5
    .venv/bin/python bench/startup.py --runs 9 --target 1.3

The judged commands run without METRICS_FILE. The same commands with METRICS_FILE set, and
`status` (which loads the settings and, with METRICS_FILE set, imports prometheus_client
and writes the file) without and with it, are printed beside them for comparison (marked
`info`), not judged.

Exit 0 when every judged command is within the target ratio, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MINIMAL_APP = '''\
import typer

app = typer.Typer(add_completion=False)


@app.command()
def hello(name: str = "world") -> None:
    """Say hello."""
    print(f"hello {name}")


app()
'''

BASELINE = "minimal one-command Typer app --help"
COMMANDS: dict[str, list[str]] = {
    "fourdqbo --help": ["-m", "fourdqbo", "--help"],
    "fourdqbo sync --help": ["-m", "fourdqbo", "sync", "--help"],
}
METRICS = " +METRICS_FILE"
# Informational: `status` in an empty installation (no token yet: exit 1, "not healthy").
STATUS = ["-m", "fourdqbo", "status", "--json"]
INFO: dict[str, tuple[list[str], bool]] = {  # name -> (args, with METRICS_FILE)
    **{name + METRICS: (args, True) for name, args in COMMANDS.items()},
    "fourdqbo status": (STATUS, False),
    "fourdqbo status" + METRICS: (STATUS, True),
}


@dataclass
class Sample:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # user + system time of the child


def run_once(
    python: str, args: Sequence[str], env: dict[str, str], cwd: Path
) -> tuple[float, float]:
    """(wall, cpu) seconds of one fresh interpreter running `args`; fails on an exit code
    other than 0 (or 1 for `status`, which reports an unconfigured installation so)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [python, *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in ((0, 1) if "status" in args else (0,)):
        raise SystemExit(
            f"{' '.join(args)} exited {done.returncode}: {done.stderr.decode(errors='replace')}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def clean_environment() -> dict[str, str]:
    """The caller's environment without fourdqbo settings or Python start-up tweaks."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FOURD_", "4D_", "QBO_", "SYNC_", "STATE_", "REDIS_", "PYTHON"))
    }
    env["PYTHONPATH"] = str(REPO)  # this checkout, even when the venv has another install
    env["COLUMNS"] = "100"
    return env


def measure(python: str, runs: int) -> dict[str, Sample]:
    with tempfile.TemporaryDirectory(prefix="fourdqbo-startup-") as scratch:
        cwd = Path(scratch)  # no .env is read from here
        baseline_file = cwd / "minimal_app.py"
        baseline_file.write_text(MINIMAL_APP, encoding="utf-8")
        env = {**clean_environment(), "STATE_BACKEND": "file", "DATA_DIR": str(cwd / "data")}
        env.pop("METRICS_FILE", None)
        with_metrics = {**env, "METRICS_FILE": str(cwd / "fourdqbo.prom")}
        commands = {
            BASELINE: ([str(baseline_file), "--help"], env),
            **{name: (args, env) for name, args in COMMANDS.items()},
            **{name: (args, with_metrics if m else env) for name, (args, m) in INFO.items()},
        }
        samples = {name: Sample() for name in commands}
        for args, command_env in commands.values():
            run_once(python, args, command_env, cwd)  # untimed: warm the caches
        # Rounds interleave the baseline with the commands, so a load spike from another
        # process on the machine hits both sides of a ratio rather than one.
        for _ in range(runs):
            for name, (args, command_env) in commands.items():
                wall, cpu = run_once(python, args, command_env, cwd)
                samples[name].wall.append(wall)
                samples[name].cpu.append(cpu)
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="Runs per command (median taken).")
    parser.add_argument("--target", type=float, default=1.5, help="Largest acceptable ratio.")
    parser.add_argument("--python", default=sys.executable, help="Interpreter of the venv.")
    options = parser.parse_args(argv)

    samples = measure(options.python, options.runs)
    base_wall = statistics.median(samples[BASELINE].wall)
    base_cpu = statistics.median(samples[BASELINE].cpu)
    print(f"cold start, median of {options.runs} fresh interpreters each ({options.python})")
    print(f"  {'':38s} {'wall':>9s} {'ratio':>6s} {'cpu':>9s} {'ratio':>6s}")
    missed = []
    for name, sample in samples.items():
        wall, cpu = statistics.median(sample.wall), statistics.median(sample.cpu)
        ratio = wall / base_wall
        line = (
            f"  {name:38s} {wall * 1000:6.1f} ms {ratio:5.2f}x "
            f"{cpu * 1000:6.1f} ms {cpu / base_cpu:5.2f}x"
        )
        if name in INFO:
            line += "  info"
        elif name != BASELINE and ratio > options.target:
            missed.append(name)
            line += f"  OVER the {options.target:g}x target"
        print(line)
    print(
        f"target: wall-time ratio <= {options.target:g}x: "
        + ("met" if not missed else "missed by " + ", ".join(missed))
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
