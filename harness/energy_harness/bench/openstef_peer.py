"""OpenSTEF as a peer of our forecasters, on the same origins, scored the same way.

    python -m energy_harness.bench.openstef_peer --dataset eemeter --out bench/openstef.json
    python -m energy_harness.bench.openstef_peer --dataset taylor --out bench/openstef-taylor.json

For each dataset: our `default` and `seed` (and `naive168`, the MASE reference) through
`commands.compare`, without and, where the data has temperature, with it as a future
covariate (`+T`: the real temperature of the forecast hours, a perfect weather forecast);
then OpenSTEF 4.7.0's preset (see `openstef_runner`) without and with that temperature.
Origins: 00:00 UTC every day over the last `--weeks` weeks (at most the last half of the
data), horizon 24 h, refit every 168 h, nothing at or after an origin seen before it.
OpenSTEF's forecasts come back as a CSV, must name exactly our (origin, target time)
pairs, and are scored by our `metrics.score` against our naive168 on the same points.

OpenSTEF needs Python >= 3.12 and is never a dependency of the product: it lives in its
own virtualenv, `~/.cache/energy-pipeline/bench/openstef-venv` (ENERGY_PIPELINE_CACHE),
made from a Python 3.12 on PATH or under ~/.pyenv/versions with `pip install
openstef==4.7.0` from PyPI, and runs `openstef_runner.py` as a subprocess.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from energy_pipeline.forecasting.backtest import BacktestConfig, BacktestResult
from energy_pipeline.forecasting.commands import compare
from energy_pipeline.forecasting.csvio import FORECAST_COLUMNS, read_hourly_csv
from energy_pipeline.forecasting.frame import HourlyFrame, iso_hour
from energy_pipeline.forecasting.metrics import Metrics, format_table, score

from energy_harness.bench.datasets import (
    CHOSEN_SAMPLES,
    SampleWheel,
    bench_cache,
    eemeter_csv,
    eemeter_wheel,
    survey,
)
from energy_harness.bench.forecast import last_weeks_start, machine, taylor_csv

OPENSTEF_VERSION = "4.7.0"
RUNNER = Path(__file__).with_name("openstef_runner.py")
HORIZON, EVERY, RETRAIN_EVERY = 24, 24, 168
OURS = ("default", "seed", "naive168")
TEMPERATURE = "temperature"
# England & Wales (Taylor) has no one place; the middle of England stands in.
TAYLOR_SITE = {"country": "GB", "latitude": 52.5, "longitude": -1.5}


def venv_dir() -> Path:
    return bench_cache() / "openstef-venv"


def _is_python312(python: str) -> bool:
    # pyenv's shims exist on PATH but fail unless 3.12 is the selected version.
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return False
    return done.stdout.strip() == "True"


def find_python312() -> str:
    """A working Python 3.12: the newest pyenv 3.12.x, else `python3.12` on PATH."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = sorted(
        glob.glob(str(pyenv / "3.12*" / "bin" / "python3.12")),
        key=lambda p: [int(x) for x in Path(p).parents[1].name.split(".") if x.isdigit()],
        reverse=True,
    )
    on_path = shutil.which("python3.12")
    for python in [*candidates, *([on_path] if on_path else [])]:
        if _is_python312(python):
            return python
    raise SystemExit(
        "OpenSTEF 4.7 needs Python 3.12: none works under "
        f"{pyenv}/3.12*/bin or as python3.12 on PATH; install one (e.g. `pyenv install 3.12`)"
    )


def installed_openstef(python: Path) -> str | None:
    """The openstef version importable by `python`, or None."""
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('openstef'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def _step(command: list[str], what: str, venv: Path) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
        raise SystemExit(f"cannot make the OpenSTEF venv at {venv}: {what}: {error}") from error
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-3000:]
        raise SystemExit(
            f"cannot make the OpenSTEF venv at {venv}: {what} failed "
            f"(exit {done.returncode}): {' '.join(command)}\n{tail}"
        )


def ensure_openstef_venv(venv: Path | None = None, base_python: str | None = None) -> Path:
    """The venv's python with openstef==OPENSTEF_VERSION, made or repaired if needed."""
    venv = venv or venv_dir()
    python = venv / "bin" / "python"
    if installed_openstef(python) == OPENSTEF_VERSION:
        return python
    base = base_python or find_python312()
    print(f"making {venv} with {base} and openstef=={OPENSTEF_VERSION} ...", file=sys.stderr)
    _step([base, "-m", "venv", "--clear", str(venv)], "python -m venv", venv)
    _step(
        [str(python), "-m", "pip", "install", "--quiet", f"openstef=={OPENSTEF_VERSION}"],
        f"pip install openstef=={OPENSTEF_VERSION}",
        venv,
    )
    version = installed_openstef(python)
    if version != OPENSTEF_VERSION:
        raise SystemExit(
            f"cannot make the OpenSTEF venv at {venv}: after pip install it has openstef "
            f"{version}, not {OPENSTEF_VERSION}"
        )
    return python


def _number(value: float) -> str:
    return "" if np.isnan(value) else repr(float(value))


def write_runner_csv(path: Path, frame: HourlyFrame, temperature: str | None) -> None:
    """The runner's input: the frame's own hourly grid, so its origins are ours."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "load", *([temperature] if temperature else [])])
        extra = [frame.future[temperature]] if temperature else []
        for i, hour in enumerate(frame.times):
            writer.writerow(
                [iso_hour(hour), _number(frame.target[i]), *(_number(c[i]) for c in extra)]
            )


@dataclass(frozen=True)
class ForecastRows:
    """A forecasts CSV (`csvio.FORECAST_COLUMNS`) as arrays; times `datetime64[h]`."""

    origin: np.ndarray
    target_time: np.ndarray
    horizon: np.ndarray
    p10: np.ndarray
    p50: np.ndarray
    p90: np.ndarray
    actual: np.ndarray


def _hour(text: str) -> np.datetime64:
    return np.datetime64(text.strip().removesuffix("Z"), "h")


def _float(text: str) -> float:
    return float(text) if text.strip() else np.nan


def read_forecasts_csv(path: Path) -> ForecastRows:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != FORECAST_COLUMNS:
            raise ValueError(f"{path}: header {reader.fieldnames}, expected {FORECAST_COLUMNS}")
        rows = list(reader)
    return ForecastRows(
        origin=np.array([_hour(r["origin"]) for r in rows], dtype="datetime64[h]"),
        target_time=np.array([_hour(r["target_time"]) for r in rows], dtype="datetime64[h]"),
        horizon=np.array([int(r["horizon"]) for r in rows], dtype=np.int64),
        **{k: np.array([_float(r[k]) for r in rows]) for k in ("p10", "p50", "p90", "actual")},
    )


def score_peer(rows: ForecastRows, reference: BacktestResult) -> Metrics:
    """Score a peer's forecasts on our points: the same (origin, target time) pairs in the
    same order as `reference` (our naive168 run), against its forecasts for MASE."""
    if len(rows.origin) != len(reference.origin):
        raise ValueError(
            f"the peer wrote {len(rows.origin)} forecasts, we made {len(reference.origin)} "
            f"(origins {len(np.unique(rows.origin))} vs {len(np.unique(reference.origin))})"
        )
    same = (rows.origin == reference.origin) & (rows.target_time == reference.target_time)
    same &= rows.horizon == reference.horizon
    if not same.all():
        i = int(np.argmin(same))
        raise ValueError(
            f"row {i}: the peer forecast origin {rows.origin[i]} target {rows.target_time[i]} "
            f"h{rows.horizon[i]}, we origin {reference.origin[i]} target "
            f"{reference.target_time[i]} h{reference.horizon[i]}"
        )
    if not np.allclose(rows.actual, reference.actual, rtol=1e-6, atol=1e-9, equal_nan=True):
        raise ValueError("the peer's actuals differ from ours: its input was not our data")
    return score(reference.actual, rows.p10, rows.p50, rows.p90, reference.p50)


@dataclass(frozen=True)
class PeerSettings:
    python: Path
    train_days: int = 90
    model: str = "xgboost"


def run_openstef(
    peer: PeerSettings,
    frame: HourlyFrame,
    config: BacktestConfig,
    site: dict[str, Any],
    temperature: str | None,
    workdir: Path,
) -> tuple[ForecastRows, dict[str, Any]]:
    """The runner over `frame` from `config.test_start`; its forecasts and summary."""
    label = "temperature" if temperature else "no-temperature"
    source, out, summary = (workdir / f"{label}-{n}" for n in ("in.csv", "out.csv", "run.json"))
    write_runner_csv(source, frame, temperature)
    command = [
        str(peer.python),
        str(RUNNER),
        *("--csv", str(source), "--out", str(out), "--summary", str(summary)),
        *("--first-origin", iso_hour(frame.times[config.test_start])),
        *("--horizon", str(config.horizon), "--every", str(config.every)),
        *("--retrain-every", str(config.retrain_every)),
        *("--train-days", str(peer.train_days), "--model", peer.model),
        *("--country", site["country"]),
        *("--latitude", str(site["latitude"]), "--longitude", str(site["longitude"])),
        *(["--temperature-col", temperature] if temperature else []),
    ]
    # xgboost and BLAS default to every core; the bench machine is shared.
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **os.environ}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the OpenSTEF runner failed (exit {done.returncode}): {command}")
    facts = json.loads(summary.read_text())
    facts["wall_seconds"] = round(time.perf_counter() - started, 2)
    return read_forecasts_csv(out), facts


def fit_table(rows: Sequence[tuple[str, Metrics, float]]) -> str:
    """`metrics.format_table` with the seconds spent fitting in a last column."""
    lines = format_table([(name, m) for name, m, _ in rows]).splitlines()
    lines[0] += f" {'fit s':>8}"
    lines[1] += "-" * 9
    body = [f"{line} {fit:>8.1f}" for line, (_, _, fit) in zip(lines[2:], rows, strict=True)]
    return "\n".join([*lines[:2], *body])


def first_origin_index(frame: HourlyFrame, weeks: int) -> tuple[int, int]:
    """(weeks used, first origin index): the last `weeks` weeks of daily origins, fewer
    if that would leave less than half the data before the first origin."""
    used = max(1, min(weeks, len(frame) // 2 // 168))
    return used, last_weeks_start(frame, used, HORIZON)


def model_entry(metrics: Metrics, result: BacktestResult) -> dict[str, Any]:
    return {
        **metrics.as_dict(),
        "fit_seconds": round(result.fit_seconds, 3),
        "predict_seconds": round(result.predict_seconds, 3),
    }


def protocol_config(
    frame: HourlyFrame, weeks: int, start: int, reference: BacktestResult, train_days: Any
) -> dict[str, Any]:
    """The protocol of one dataset's run, as its report records it."""
    return {
        "horizon_hours": HORIZON,
        "every_hours": EVERY,
        "retrain_every_hours": RETRAIN_EVERY,
        "weeks": weeks,
        "first_origin": iso_hour(frame.times[start]),
        "last_origin": iso_hour(reference.origin[-1]),
        "origins": len(np.unique(reference.origin)),
        "history_before_first_origin_hours": start,
        "openstef_train_days": train_days,
    }


def bench_dataset(
    csv_path: Path,
    time_col: str,
    target_col: str,
    temperature: str | None,
    site: dict[str, Any],
    weeks: int,
    peer: PeerSettings,
    stderr: TextIO,
) -> dict[str, Any]:
    frame = read_hourly_csv(csv_path, time_col, target_col)
    used, start = first_origin_index(frame, weeks)
    config = BacktestConfig(HORIZON, EVERY, RETRAIN_EVERY, start)
    rows: list[tuple[str, Metrics, float]] = []
    models: dict[str, Any] = {}
    results, metrics = compare(frame, list(OURS), config, stderr=stderr)
    reference = results["naive168"]
    for name in OURS:
        models[name] = model_entry(metrics[name], results[name])
        rows.append((name, metrics[name], results[name].fit_seconds))
    frame_t = frame
    if temperature:
        frame_t = read_hourly_csv(csv_path, time_col, target_col, future_covariates=[temperature])
        results_t, metrics_t = compare(
            frame_t, ["default", "seed"], config, future=[temperature], stderr=stderr
        )
        for name in ("default", "seed"):
            models[f"{name}+T"] = model_entry(metrics_t[name], results_t[name])
            rows.append((f"{name}+T", metrics_t[name], results_t[name].fit_seconds))
    with tempfile.TemporaryDirectory() as tmp:
        for known in [None, *([temperature] if temperature else [])]:
            peer_frame = frame_t if known else frame
            forecasts, facts = run_openstef(peer, peer_frame, config, site, known, Path(tmp))
            label = "openstef+T" if known else "openstef"
            peer_metrics = score_peer(forecasts, reference)
            models[label] = {**peer_metrics.as_dict(), **facts}
            rows.append((label, peer_metrics, facts["fit_seconds"]))
    return {
        "config": protocol_config(frame, used, start, reference, peer.train_days or "all"),
        "models": models,
        "table": fit_table(rows),
    }


def datasets_named(text: str) -> list[str]:
    """`eemeter` (the chosen samples), `eemeter:<sample id>`, `taylor`; comma-separated."""
    names: list[str] = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item == "eemeter":
            names += [f"eemeter:{s}" for s in CHOSEN_SAMPLES]
        elif item == "taylor" or item.startswith("eemeter:"):
            names.append(item)
        else:
            raise SystemExit(f"--dataset {item!r}: use eemeter, eemeter:<sample id> or taylor")
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class Dataset:
    """One dev benchmark as a CSV: its columns, where its load is, and what it is."""

    csv: Path
    time_col: str
    target_col: str
    temperature: str | None  # the outdoor temperature column, if the data has one
    site: dict[str, Any]
    meta: dict[str, Any]


def load_dataset(name: str, workdir: Path) -> Dataset:
    """`taylor` (written into `workdir`) or `eemeter:<sample id>` (in the bench cache)."""
    if name == "taylor":
        path = workdir / "taylor.csv"
        rows = taylor_csv(path)
        meta = {"name": "taylor", "source": "pmdarima.datasets.load_taylor", "rows": rows}
        return Dataset(path, "time", "demand", None, TAYLOR_SITE, meta)
    path, meta = eemeter_csv(name.split(":", 1)[1])
    return Dataset(path, "time", "load", TEMPERATURE, meta["site"], meta)


def run_dataset(name: str, weeks: int, peer: PeerSettings, workdir: Path) -> dict[str, Any]:
    data = load_dataset(name, workdir)
    result = bench_dataset(
        data.csv, data.time_col, data.target_col, data.temperature, data.site, weeks, peer,
        sys.stderr,
    )
    return {"dataset": data.meta, **result}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m energy_harness.bench.openstef_peer")
    parser.add_argument("--dataset", default="eemeter", help="eemeter, eemeter:<id>, taylor")
    parser.add_argument("--out", type=Path, default=Path("bench/openstef.json"))
    parser.add_argument("--weeks", type=int, default=13, help="weeks of daily origins")
    parser.add_argument(
        "--train-days", type=int, default=90, help="OpenSTEF's training window (0: all history)"
    )
    parser.add_argument("--openstef-model", default="xgboost", help="the preset's model")
    parser.add_argument("--venv", type=Path, default=None, help="OpenSTEF virtualenv")
    args = parser.parse_args(argv)
    names = datasets_named(args.dataset)
    python = ensure_openstef_venv(args.venv)
    peer = PeerSettings(python, args.train_days, args.openstef_model)
    report: dict[str, Any] = {
        "command": "python -m energy_harness.bench.openstef_peer "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "openstef": {"venv": str(python.parent.parent), "version": installed_openstef(python)},
        "datasets": {},
    }
    if any(n.startswith("eemeter:") for n in names):
        report["eemeter_survey"] = survey(SampleWheel(eemeter_wheel()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            entry = run_dataset(name, args.weeks, peer, Path(tmp))
            report["datasets"][name] = entry
            config = entry["config"]
            known = (
                ", +T: the temperature of the forecast hours given"
                if "+T" in entry["table"]
                else ""
            )
            print(
                f"\n{name}: {config['origins']} origins {config['first_origin']} .. "
                f"{config['last_origin']}{known}"
            )
            print(entry["table"])
            # After each dataset, so a long run that fails later keeps what it measured.
            args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
