"""Public hourly electricity load with outdoor temperature, from a PyPI wheel.

The OpenEEmeter wheel `eemeter` (Apache-2.0) ships sample meter data beside the hourly
temperature of the same place (`eemeter/samples/*.csv.gz`, described by its
`metadata.json`). Of its 24 sample files, five are hourly electricity with a temperature
companion; `survey` measures each. Two are chosen, both gap-free and over two years long:

- `il-electricity-cdd-hdd-hourly`: 19,417 hours from 2015-11-22, with `il-tempF` (the
  NOAA station USAF 724390, Springfield IL). The load is *simulated* by the eemeter
  authors (their `load_sample` says "samples are simulated, not real, data") as a base
  plus heating and cooling loads with balance points 60 / 65 °F, with a 10 % drop after
  the 2016-12-26 .. 2017-01-04 "blackout" (metadata.json); temperature drives it by
  construction, under heavy hourly noise. (`il-electricity-cdd-only-hourly` is the same
  simulation without heating.)
- `uk-electricity-hdd-only-hourly-sample-0`: 23,508 hours from 2020-04-01, with
  `uk-tempC-sample-0`. Its provenance is not documented in the wheel (its metadata.json
  entry holds template values); zeros, a weak temperature dependence and a strong
  daily shape suggest one dwelling's smart meter.

UK samples 1 and 2 are half-hourly with duplicate times, and their temperature covers
only 2012-10-12 .. 2014-01-25 (470 days): sample 1 has a 23 h gap there, sample 2 has
336 missing hours (a 240 h gap) and 14,273 more hours without temperature.

The wheel is fetched once with `pip download --no-deps` into the bench cache and read
with `zipfile`; nothing is installed. `eemeter_csv` writes `time,load,temperature`
(UTC hour starts, °C) that `read_hourly_csv` reads.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from energy_pipeline.core.timeutil import parse_iso_time
from energy_pipeline.forecasting.frame import iso_hour, to_datetime64
from energy_pipeline.forecasting.resample import hourly_means

from energy_harness.localstack.install import cache_dir

EEMETER_PACKAGE = "eemeter"
EEMETER_VERSION = "4.1.1"
SAMPLES_DIR = "eemeter/eemeter/samples/"
CHOSEN_SAMPLES = ("il-electricity-cdd-hdd-hourly", "uk-electricity-hdd-only-hourly-sample-0")

PROVENANCE = {
    "il-": (
        "simulated load (eemeter's load_sample: 'samples are simulated, not real, data'): "
        "base + heating + cooling load from real NOAA temperature (USAF 724390, Springfield "
        "IL), 10% lower after the 2016-12-26..2017-01-04 blackout"
    ),
    "uk-": (
        "not documented in the wheel (metadata.json holds template values for it); looks "
        "like one dwelling's smart meter"
    ),
}

# Where each sample's load is, for a peer's holiday and daylight features: the IL
# temperature station (USAF 724390, Springfield IL); the UK samples say nothing more than
# "uk", so the middle of England stands in.
SITES = {
    "il-": {"country": "US", "latitude": 39.845, "longitude": -89.684},
    "uk-": {"country": "GB", "latitude": 52.5, "longitude": -1.5},
}


def bench_cache() -> Path:
    path = cache_dir() / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def eemeter_wheel(cache: Path | None = None) -> Path:
    """The pinned eemeter wheel, downloaded once (no dependencies, nothing installed)."""
    folder = (cache or bench_cache()) / "wheels"
    pattern = f"{EEMETER_PACKAGE}-{EEMETER_VERSION}-*.whl"
    found = sorted(folder.glob(pattern))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--dest", str(folder), f"{EEMETER_PACKAGE}=={EEMETER_VERSION}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = sorted(folder.glob(pattern))
    if done.returncode != 0 or not found:
        raise SystemExit(
            f"could not download {EEMETER_PACKAGE}=={EEMETER_VERSION} from PyPI "
            f"({' '.join(command)}):\n{done.stderr.strip()[-2000:]}"
        )
    return found[0]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _rows(gz: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(gzip.decompress(gz).decode("utf-8"))))


def _time(text: str) -> np.datetime64:
    return to_datetime64(parse_iso_time(text))


def _value(text: str) -> float:
    text = text.strip()
    return math.nan if not text or text.lower() == "nan" else float(text)


def parse_meter(gz: bytes) -> tuple[np.ndarray, np.ndarray]:
    """`start,value` (ISO, UTC if no offset) -> (datetime64[s] UTC, values)."""
    rows = _rows(gz)
    times = np.array([_time(r["start"]) for r in rows], dtype="datetime64[s]")
    return times, np.array([_value(r["value"]) for r in rows])


def parse_temperature(gz: bytes) -> tuple[np.ndarray, np.ndarray]:
    """`dt,tempF` or `[index],dt,tempC` -> (datetime64[s] UTC, °C)."""
    rows = _rows(gz)
    if not rows:
        return np.array([], dtype="datetime64[s]"), np.array([])
    column = next((c for c in rows[0] if c in ("tempF", "tempC")), None)
    if column is None:
        raise ValueError(f"no tempF or tempC column in {list(rows[0])}")
    times = np.array([_time(r["dt"]) for r in rows], dtype="datetime64[s]")
    values = np.array([_value(r[column]) for r in rows])
    if column == "tempF":
        values = (values - 32.0) * 5.0 / 9.0
    return times, values


def _longest_run(missing: np.ndarray) -> int:
    longest = run = 0
    for gap in missing.tolist():
        run = run + 1 if gap else 0
        longest = max(longest, run)
    return longest


def align_hourly(
    meter: tuple[np.ndarray, np.ndarray], temperature: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Both series averaged per UTC hour on one gap-free grid over the hours both span.

    Returns (hours, load, °C, quality): hours without a reading are NaN and counted, so
    gaps are reported rather than filled.
    """
    load_grid, load = hourly_means(meter[0], {"v": meter[1]})
    temp_grid, temp = hourly_means(temperature[0], {"v": temperature[1]})
    if len(load_grid) == 0 or len(temp_grid) == 0:
        raise ValueError("a sample without rows")
    first, last = max(load_grid[0], temp_grid[0]), min(load_grid[-1], temp_grid[-1])
    if last < first:
        raise ValueError("load and temperature do not overlap in time")
    hours = np.arange(first, last + np.timedelta64(1, "h"), dtype="datetime64[h]")
    y = load["v"][(hours - load_grid[0]).astype(np.int64)]
    t = temp["v"][(hours - temp_grid[0]).astype(np.int64)]
    stamps = meter[0].astype("datetime64[h]")
    quality = {
        "meter_rows": len(meter[0]),
        "temperature_rows": len(temperature[0]),
        "meter_duplicate_times": int(len(meter[0]) - len(np.unique(meter[0]))),
        "meter_sub_hourly": bool(len(np.unique(stamps)) < len(np.unique(meter[0]))),
        "hours": len(hours),
        "days": round(len(hours) / 24, 1),
        "from": iso_hour(hours[0]),
        "to": iso_hour(hours[-1]),
        "load_missing_hours": int(np.isnan(y).sum()),
        "load_longest_gap_hours": _longest_run(np.isnan(y)),
        "load_zero_hours": int((y == 0).sum()),
        "temperature_missing_hours": int(np.isnan(t).sum()),
        "temperature_longest_gap_hours": _longest_run(np.isnan(t)),
        "hours_outside_common_span": int(len(load_grid) + len(temp_grid) - 2 * len(hours)),
    }
    return hours, y, t, quality


def _cell(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


def write_load_csv(path: Path, hours: np.ndarray, load: np.ndarray, temp: np.ndarray) -> None:
    """`time,load,temperature`, one row per hour, unknown values empty."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("time", "load", "temperature"))
        for h, y, t in zip(hours, load.tolist(), temp.tolist(), strict=True):
            writer.writerow((iso_hour(h), _cell(y), _cell(t)))


class SampleWheel:
    """The samples inside one eemeter wheel, read with zipfile."""

    def __init__(self, wheel: Path) -> None:
        self.path = wheel
        self.zip = zipfile.ZipFile(wheel)
        self.metadata: dict[str, dict[str, Any]] = json.loads(
            self.zip.read(SAMPLES_DIR + "metadata.json")
        )

    def hourly_electricity(self) -> list[str]:
        return sorted(
            name
            for name, meta in self.metadata.items()
            if meta.get("freq") == "hourly" and meta.get("interpretation") == "electricity"
        )

    def aligned(self, sample: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        meta = self.metadata.get(sample)
        if meta is None:
            raise ValueError(f"no sample {sample!r}; the wheel has {sorted(self.metadata)}")
        meter = parse_meter(self.zip.read(SAMPLES_DIR + meta["meter_data_filename"]))
        temperature = parse_temperature(self.zip.read(SAMPLES_DIR + meta["temperature_filename"]))
        return align_hourly(meter, temperature)

    def describe(self) -> dict[str, str]:
        return {
            "file": self.path.name,
            "package": EEMETER_PACKAGE,
            "version": EEMETER_VERSION,
            "sha256": sha256_of(self.path),
        }


def survey(wheel: SampleWheel) -> dict[str, dict[str, Any]]:
    """Length and gaps of every hourly electricity sample with its temperature."""
    return {name: wheel.aligned(name)[3] for name in wheel.hourly_electricity()}


def _by_prefix(sample: str, table: dict[str, Any]) -> Any:
    return next((value for prefix, value in table.items() if sample.startswith(prefix)), None)


def eemeter_csv(
    sample: str = CHOSEN_SAMPLES[0], cache: Path | None = None
) -> tuple[Path, dict[str, Any]]:
    """Write one sample as `time,load,temperature` in the bench cache; (path, metadata)."""
    root = cache or bench_cache()
    wheel = SampleWheel(eemeter_wheel(root))
    hours, load, temp, quality = wheel.aligned(sample)
    path = root / f"eemeter-{sample}.csv"
    write_load_csv(path, hours, load, temp)
    meta = wheel.metadata[sample]
    return path, {
        "name": f"eemeter:{sample}",
        "source": f"PyPI wheel {wheel.path.name}: {SAMPLES_DIR}{meta['meter_data_filename']} "
        f"+ {meta['temperature_filename']}",
        "wheel": wheel.describe(),
        "unit": meta.get("unit"),
        "provenance": _by_prefix(sample, PROVENANCE),
        "site": _by_prefix(sample, SITES),
        "csv": str(path),
        "columns": "time (UTC hour start), load, temperature (degC)",
        **quality,
    }
