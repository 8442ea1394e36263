"""The backtest engine and `energy-pipeline backtest`."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from energy_harness.synthetic import synthetic_building
from energy_pipeline.cli import main
from energy_pipeline.forecasting.backtest import (
    BacktestConfig,
    default_test_start,
    origins,
    run_backtest,
)
from energy_pipeline.forecasting.frame import HourlyFrame
from energy_pipeline.forecasting.plot import plotting_available
from energy_pipeline.forecasting.quantiles import QuantileForecast

pytestmark = pytest.mark.unit


def test_origins_repeat_while_the_horizon_fits() -> None:
    np.testing.assert_array_equal(origins(100, 50, 24, 24), [50, 74])
    np.testing.assert_array_equal(origins(48, 24, 24, 24), [24])
    assert len(origins(47, 24, 24, 24)) == 0
    np.testing.assert_array_equal(origins(10, 0, 3, 4), [0, 3, 6])


def test_default_test_start_is_a_midnight_late_in_the_data() -> None:
    frame = synthetic_building(24 * 20 + 5, start="2025-01-06T07:00")
    start = default_test_start(frame, 24)
    assert frame.times[start].astype(np.int64) % 24 == 0
    assert start >= 0.75 * len(frame)


@dataclass
class Persistence:
    """A real (if simple) forecaster that also checks what the engine lets it see."""

    kind: ClassVar[str] = "persistence"
    fits: list[int] = field(default_factory=list)

    def fit(self, frame: HourlyFrame, max_horizon: int) -> None:
        self.fits.append(len(frame))

    def predict(self, frame: HourlyFrame, origin: int, horizons: np.ndarray) -> QuantileForecast:
        assert len(frame) == origin + int(horizons.max())
        assert np.isnan(frame.target[origin:]).all()
        assert all(np.isnan(v[origin:]).all() for v in frame.past.values())
        last = np.full(len(horizons), frame.target[origin - 1])
        return QuantileForecast(last - 1, last, last + 1)

    def to_text(self) -> str:
        return "{}"


def test_engine_hides_the_future_and_retrains_on_schedule() -> None:
    frame = synthetic_building(24 * 12)
    made: list[Persistence] = []

    def factory() -> Persistence:
        made.append(Persistence())
        return made[-1]

    config = BacktestConfig(horizon=24, every=24, retrain_every=72, test_start=24 * 5)
    result = run_backtest(frame, "persistence", factory, config)
    # Origins on days 5..11; refits at days 5, 8 and 11, each on all data before the origin.
    assert [m.fits for m in made] == [[24 * 5], [24 * 8], [24 * 11]]
    assert len(result.horizon) == 7 * 24
    first = result.origin[0]
    assert result.target_time[0] == first and result.horizon[0] == 1
    assert result.target_time[23] == first + np.timedelta64(23, "h")
    np.testing.assert_array_equal(result.actual[:24], frame.target[24 * 5 : 24 * 6])
    assert set(result.methods) == {"model"}


def write_csv(path: Path, days: int) -> None:
    """Half-hourly rows (both halves of an hour carry the hour's value +-1)."""
    frame = synthetic_building(24 * days, seed=2)
    with path.open("w") as handle:
        handle.write("timestamp,load,temperature\n")
        for t, y, temp in zip(
            frame.times, frame.target, frame.past["avg_temperature"], strict=True
        ):
            stamp = np.datetime64(t, "m")
            handle.write(f"{stamp}:00Z,{y - 1:.4f},{temp:.3f}\n")
            handle.write(f"{stamp + np.timedelta64(30, 'm')}:00Z,{y + 1:.4f},{temp:.3f}\n")


def test_backtest_command_prints_the_table_and_writes_forecasts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "load.csv"
    write_csv(source, days=26)
    out = tmp_path / "forecasts.csv"
    code = main(
        [
            "backtest",
            "--csv", str(source),
            "--time-col", "timestamp",
            "--target-col", "load",
            "--past-covariates", "temperature",
            "--horizon", "24",
            "--every", "24h",
            "--test-start", "2025-01-29T00:00:00Z",
            "--retrain-every", "7d",
            "--out", str(out),
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert lines[0].startswith("3 origins 2025-01-29T00:00:00Z")
    table = [line.split()[0] for line in lines[3:7]]
    assert table == ["default", "naive24", "naive168", "seed"]
    assert "[default] origin 1/3" in captured.err and "(refit)" in captured.err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3 * 24
    assert rows[0]["origin"] == rows[0]["target_time"] == "2025-01-29T00:00:00Z"
    assert float(rows[0]["p10"]) <= float(rows[0]["p50"]) <= float(rows[0]["p90"])
    # Half-hours -1/+1 around the hourly value average back to it.
    reference = synthetic_building(24 * 26, seed=2)
    assert float(rows[0]["actual"]) == pytest.approx(reference.target[24 * 23], abs=1e-3)


def test_backtest_command_explains_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "load.csv"
    write_csv(source, days=3)
    base = ["backtest", "--csv", str(source), "--time-col", "timestamp"]
    assert main([*base, "--target-col", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main([*base, "--target-col", "load", "--test-start", "1999-01-01T00:00Z"]) == 2
    assert "outside the data" in capsys.readouterr().err
    assert main([*base, "--target-col", "load", "--test-start", "2025-01-08T12:00Z"]) == 2
    assert "no origin fits" in capsys.readouterr().err
    assert main([*base, "--target-col", "load", "--every", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err


@pytest.mark.skipif(not plotting_available(), reason="matplotlib (bench extra) not installed")
def test_plot_is_written_when_matplotlib_is_installed(tmp_path: Path) -> None:
    source = tmp_path / "load.csv"
    write_csv(source, days=12)
    png = tmp_path / "plot.png"
    args = ["backtest", "--csv", str(source), "--time-col", "timestamp", "--target-col", "load"]
    assert main([*args, "--model", "naive168", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(plotting_available(), reason="matplotlib is installed")
def test_plot_without_matplotlib_says_how_to_get_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "load.csv"
    write_csv(source, days=12)
    args = ["backtest", "--csv", str(source), "--time-col", "timestamp", "--target-col", "load"]
    assert main([*args, "--plot", str(tmp_path / "p.png")]) == 2
    assert "energy-pipeline[bench]" in capsys.readouterr().err
