"""Startup benchmark: training time, time from launch to ready and peak memory, for entraide and Rasa.

Run it by hand from the repository root. It is never part of the test suite:

    python -m bench.startup --repeat 3 \\
        --rasa-python /tmp/rasa-venv/bin/python --rasa-project /tmp/rasa-entraide

For entraide it measures, with a temporary model folder and database:

- training: wall time of ``entraide train --force`` (process start included) into an empty folder;
- cold start: launching ``entraide run`` with no model (it trains first) up to ``/readyz`` 200;
- warm start: launching ``entraide run`` with the model present up to ``/readyz`` 200;
- peak resident memory (VmHWM) of the server after a warm-up of parse requests and REST turns.

With ``--rasa-python`` and ``--rasa-project`` (see ``bench/rasa_project.py``) it measures the same
for ``rasa train --force`` and ``rasa run --enable-api`` (ready when ``/status`` responds 200) and
prints entraide's ratios to Rasa. Every server binds 127.0.0.1 and is stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.load import (
    LOOPBACK, QUESTIONS, STOP_TIMEOUT, SpawnedServer, bench_config, entraide_command, free_port, load_text, machine,
    machine_text, tree_peak_kib, wait_http_ok,
)

RASA_MODEL_NAME = "bench"
RASA_READY_TIMEOUT = 600.0
TRAIN_TIMEOUT = 3600.0
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post_json(url: str, body: dict[str, Any], timeout: float = 60.0) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"})
    with _opener.open(request, timeout=timeout) as response:
        return json.load(response)


def warm_up(base_url: str, turns: int) -> None:
    """Send ``turns`` parse requests and ``turns`` REST turns (in conversations of 5), one at a time."""
    for index in range(turns):
        text = QUESTIONS[index % len(QUESTIONS)]
        post_json(f"{base_url}/model/parse", {"text": text})
        post_json(f"{base_url}/webhooks/rest/webhook", {"sender": f"warm-up-{index // 5}", "message": text})


def timed_command(command: list[str], cwd: Path, log_path: Path, environment: dict[str, str] | None = None) -> float:
    """Run ``command`` to its end and return its wall time in seconds. Raise RuntimeError when it fails."""
    started = time.perf_counter()
    with log_path.open("ab") as log:
        completed = subprocess.run(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env=environment, timeout=TRAIN_TIMEOUT)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with code {completed.returncode}; see {log_path}")
    return elapsed


def median(values: list[float]) -> float:
    return statistics.median(values)


# ----- entraide ----------------------------------------------------------------------------


def measure_entraide(workdir: Path, repeat: int, warmup_turns: int) -> dict[str, Any]:
    """Measure training, cold and warm start, and peak memory of entraide ``repeat`` times each."""
    figures: dict[str, Any] = {"train_s": [], "cold_start_s": [], "warm_start_s": [], "peak_mib": []}
    for attempt in range(repeat):
        directory = workdir / f"entraide-{attempt}"
        directory.mkdir(parents=True)
        config = bench_config(directory)
        log = directory / "log.txt"

        figures["train_s"].append(timed_command([entraide_command(), "train", "--force", "--config", str(config)], directory, log))

        # Cold start: an empty model folder of its own, so the server trains before it is ready.
        cold_directory = directory / "cold"
        cold_directory.mkdir()
        cold = SpawnedServer(bench_config(cold_directory), cold_directory / "server.log")
        try:
            figures["cold_start_s"].append(cold.start())
        finally:
            cold.stop()

        warm = SpawnedServer(config, directory / "server.log")
        try:
            figures["warm_start_s"].append(warm.start())
            warm_up(warm.url, warmup_turns)
            figures["peak_mib"].append(tree_peak_kib(warm.pid) / 1024)
        finally:
            warm.stop()
        print(f"entraide run {attempt + 1}: train {figures['train_s'][-1]:.2f} s, cold start {figures['cold_start_s'][-1]:.2f} s, "
              f"warm start {figures['warm_start_s'][-1]:.2f} s, peak {figures['peak_mib'][-1]:.0f} MiB, load average {load_text()}", flush=True)
    return figures


# ----- Rasa --------------------------------------------------------------------------------


def rasa_environment() -> dict[str, str]:
    environment = dict(os.environ)
    # No usage reports to Rasa's servers, and less TensorFlow noise in the log.
    environment["RASA_TELEMETRY_ENABLED"] = "false"
    environment["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return environment


def rasa_command(rasa_python: Path) -> list[str]:
    return [str(rasa_python), "-m", "rasa"]


def measure_rasa(rasa_python: Path, project: Path, workdir: Path, repeat: int, warmup_turns: int) -> dict[str, Any]:
    """Measure ``rasa train --force`` and ``rasa run --enable-api`` ``repeat`` times each."""
    figures: dict[str, Any] = {"train_s": [], "start_s": [], "peak_mib": []}
    environment = rasa_environment()
    models = workdir / "rasa-models"
    log = workdir / "rasa.log"
    for attempt in range(repeat):
        # Rasa keeps trained components in .rasa/cache and reuses them; --force and an empty cache
        # make every attempt train from scratch.
        shutil.rmtree(project / ".rasa", ignore_errors=True)
        shutil.rmtree(models, ignore_errors=True)
        train = [*rasa_command(rasa_python), "train", "--force", "--out", str(models), "--fixed-model-name", RASA_MODEL_NAME]
        figures["train_s"].append(timed_command(train, project, log, environment))

        model = next(models.glob(f"{RASA_MODEL_NAME}*.tar.gz"))
        port = free_port()
        command = [*rasa_command(rasa_python), "run", "--enable-api", "--interface", LOOPBACK, "--port", str(port), "--model", str(model)]
        launched = time.perf_counter()
        with log.open("ab") as output:
            process = subprocess.Popen(command, cwd=project, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                       env=environment, start_new_session=True)
        try:
            wait_http_ok(f"http://{LOOPBACK}:{port}/status", time.monotonic() + RASA_READY_TIMEOUT, process)
            figures["start_s"].append(time.perf_counter() - launched)
            warm_up(f"http://{LOOPBACK}:{port}", warmup_turns)
            figures["peak_mib"].append(tree_peak_kib(process.pid) / 1024)
        finally:
            stop_process(process)
        print(f"rasa run {attempt + 1}: train {figures['train_s'][-1]:.1f} s, start {figures['start_s'][-1]:.2f} s, "
              f"peak {figures['peak_mib'][-1]:.0f} MiB, load average {load_text()}", flush=True)
    return figures


def stop_process(process: subprocess.Popen) -> None:
    """Stop a child by its PID: SIGTERM, then SIGKILL after ``STOP_TIMEOUT`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)


def rasa_version(rasa_python: Path) -> str:
    completed = subprocess.run([str(rasa_python), "-c", "import rasa, sys; print(rasa.__version__, sys.version.split()[0])"],
                               capture_output=True, text=True, env=rasa_environment(), timeout=300)
    return completed.stdout.strip() or completed.stderr.strip()[-200:]


# ----- report ------------------------------------------------------------------------------


def ratio_line(name: str, ours: float, theirs: float, limit: float) -> str:
    share = ours / theirs
    verdict = "met" if share <= limit else "MISSED"
    return f"{name}: entraide {ours:.2f}, rasa {theirs:.2f}, ratio 1/{1 / share:.1f} (target <= 1/{1 / limit:.0f}): {verdict}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description="Measure training, start-up and memory.")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each entraide measurement; the median is reported (default: 3)")
    parser.add_argument("--rasa-repeat", type=int, default=1, help="runs of each Rasa measurement (default: 1)")
    parser.add_argument("--warmup-turns", type=int, default=50, help="parse requests and REST turns sent before reading memory (default: 50)")
    parser.add_argument("--rasa-python", type=Path, help="Python of the virtual environment where rasa 3.6 is installed")
    parser.add_argument("--rasa-project", type=Path, help="Rasa project written by bench/rasa_project.py")
    parser.add_argument("--workdir", type=Path, help="keep configs, models and logs here (default: a temporary folder, removed)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    options = parser.parse_args(argv)
    if (options.rasa_python is None) != (options.rasa_project is None):
        parser.error("give both --rasa-python and --rasa-project, or neither")

    temporary = None
    if options.workdir:
        workdir = options.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        temporary = tempfile.TemporaryDirectory(prefix="entraide-startup-")
        workdir = Path(temporary.name)
    try:
        report: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "load_before": os.getloadavg()}
        print(f"machine: {machine_text()}; {report['date']}; load average {load_text(report['load_before'])}", flush=True)
        report["entraide"] = measure_entraide(workdir, options.repeat, options.warmup_turns)
        lines = []
        if options.rasa_python:
            report["rasa_version"] = rasa_version(options.rasa_python)
            print(f"rasa, python: {report['rasa_version']}", flush=True)
            report["rasa"] = measure_rasa(options.rasa_python, options.rasa_project.resolve(), workdir, options.rasa_repeat, options.warmup_turns)
            ours, theirs = report["entraide"], report["rasa"]
            lines = [
                ratio_line("training time (s)", median(ours["train_s"]), median(theirs["train_s"]), 1 / 50),
                ratio_line("launch to ready (s), model present", median(ours["warm_start_s"]), median(theirs["start_s"]), 1 / 20),
                ratio_line("peak resident memory after warm-up (MiB)", median(ours["peak_mib"]), median(theirs["peak_mib"]), 1 / 5),
            ]
        print("medians: " + ", ".join(f"{key} {median(values):.2f}" for key, values in report["entraide"].items()))
        for line in lines:
            print(line)
        report["targets"] = lines
        if options.json:
            options.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    finally:
        if temporary is not None:
            temporary.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
