"""The demo's plan (a run with a duration ends with forecasts, so its backfill must fit),
what its live view and plot say, and what `make demo` installs."""

from __future__ import annotations

import argparse
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from energy_harness.demo import (
    BACKFILL_MSG_PER_S,
    FIRST_FORECAST_S,
    SITE,
    STARTUP_S,
    TRAIN_S,
    DemoPlan,
    choose_interval,
    consumption_unit,
    forecast_figure,
    history_hours,
    missing_stages,
    render_view,
    shortest_duration,
)
from energy_harness.images import REPO
from energy_pipeline.core.errors import USAGE, CommandError

pytestmark = pytest.mark.unit


def args(**overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "fast": False,
        "sites": 2,
        "devices": 4,
        "history": "15d",
        "duration": 0.0,
    }
    values.update(overrides)
    return argparse.Namespace(**values)


def test_history_is_read_in_days_or_hours() -> None:
    assert history_hours("15d") == 360
    assert history_hours("36h") == 36
    assert history_hours("2w") == 336  # the CLI's one duration grammar, as --start now-2w
    with pytest.raises(ValueError, match="duration"):
        history_hours("2 weeks")


@pytest.mark.parametrize("duration", [130, 180, 300, 600, 1200, 3600])
def test_the_chosen_backfill_fits_the_duration(duration: float) -> None:
    plan = DemoPlan.from_args(args(duration=duration))
    per_hour = dict((("5m", 12), ("15m", 4), ("1h", 1)))[plan.interval]
    readings = plan.streams * history_hours(plan.history) * per_hour
    assert readings / BACKFILL_MSG_PER_S + STARTUP_S + TRAIN_S + FIRST_FORECAST_S <= duration


@pytest.mark.parametrize(("overrides", "shortest"), [
    ({}, 130),  # 2 sites x 5 sensors x 4 devices, 15 days: 14,400 readings
    ({"fast": True, "history": "60d"}, 130),  # --fast keeps 15 days whatever --history says
    ({"history": "30d"}, 190),
    ({"sites": 1, "devices": 1, "history": "15d"}, 80),
])
def test_a_duration_that_cannot_end_with_forecasts_is_refused_naming_the_shortest(
    overrides: dict[str, object], shortest: int,
) -> None:
    assert DemoPlan.from_args(args(duration=shortest, **overrides)).interval == "1h"
    with pytest.raises(CommandError) as refused:
        DemoPlan.from_args(args(duration=shortest - 1, **overrides))
    assert refused.value.status == USAGE
    assert f"--duration {shortest} (make demo DURATION={shortest})" in str(refused.value)
    if shortest > 90:
        # Issue 19's case: DURATION=90 ran to its end and stored no forecast.
        with pytest.raises(CommandError, match="too short to end with forecasts"):
            DemoPlan.from_args(args(duration=90, **overrides))


def test_shortest_duration_is_whole_tens_of_seconds() -> None:
    assert shortest_duration(40, 360) == 130  # 35 + 57.6 + 20 + 15 = 127.6
    assert shortest_duration(0, 0) == 70


def test_the_summary_names_each_stage_that_produced_nothing(tmp_path: Path) -> None:
    full = {"site": SITE, "rows": 10, "model": VERSION, "forecasts": 5, "site_forecasts": 5,
            "latest_reading": datetime(2026, 12, 1, 5, tzinfo=UTC)}
    assert missing_stages(full, tmp_path) == []
    other_site_only = {**full, "site_forecasts": 0}
    assert [m.split(":")[0] for m in missing_stages(other_site_only, tmp_path)] == ["forecasts"]
    nothing = {**full, "rows": 0, "model": None, "forecasts": 0, "site_forecasts": 0,
               "latest_reading": None}
    missing = missing_stages(nothing, tmp_path)
    assert [m.split(":")[0] for m in missing] == ["readings", "model", "forecasts"]
    assert str(tmp_path) in missing[0]
    short = missing_stages({**full, "model": None}, tmp_path)
    assert short == [f"model: none was promoted for {SITE} (training runs once the history is "
                     "in, the backfill had reached 2026-12-01 05:00 UTC; train output above)"]


def test_short_runs_go_hourly_long_runs_finer() -> None:
    assert DemoPlan.from_args(args(duration=130)).interval == "1h"
    assert DemoPlan.from_args(args(duration=3600)).interval == "5m"
    assert DemoPlan.from_args(args()).interval == "15m"  # until Ctrl-C
    assert DemoPlan.from_args(args(fast=True, duration=3600)).interval == "1h"


def test_the_simulator_gets_the_plan() -> None:
    command = DemoPlan.from_args(args(duration=130)).simulate_command()
    assert command[command.index("--interval") + 1] == "1h"
    assert command[command.index("--start") + 1] == "now-15d"
    assert choose_interval(40, 360, 0) == "15m"


# -- what the live view and the plot say ---------------------------------------------------

VERSION = "site-0.20261201T203000Z.0a1b2c3d"


def test_the_consumption_unit_follows_the_reading_interval() -> None:
    # A reading is the kWh used in its interval, so an hourly mean is kWh per interval.
    assert consumption_unit("15m") == "kWh per 15 min"
    assert consumption_unit("5m") == "kWh per 5 min"
    assert consumption_unit("1h") == "kWh per 1 h"


def test_the_plot_gives_the_unit_on_its_axis_and_nowhere_else() -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    hours = [start + timedelta(hours=h) for h in range(48)]
    actual = [(t, 10.0 + h % 24) for h, t in enumerate(hours[:24])]
    forecast = [(t, 9.0, 10.0, 11.0, VERSION) for t in hours[24:]]
    unit = consumption_unit("15m")
    figure = forecast_figure(actual, forecast, "site-0", unit)
    [ax] = figure.axes
    assert unit in ax.get_ylabel()
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["actual", "forecast P10-P90", "forecast P50"]
    assert not [label for label in legend if "kWh" in label]  # a unit here could disagree
    # The plotted site and the model that made the plotted forecast.
    assert "site-0" in ax.get_title() and VERSION in ax.get_title()


def test_the_live_view_names_the_plotted_site_its_model_and_the_plot_unit() -> None:
    db = {
        "site": SITE, "rows": 1000, "streams": 40, "latest_reading": None, "forecasts": 168,
        "latest_issue": None, "model": VERSION,
        "last_pair": (datetime(2026, 12, 1, 5, tzinfo=UTC), 10.0, 9.0, 11.0, 10.5),
    }
    view = render_view({}, 0, db, consumption_unit("15m"))
    assert f"{SITE} model" in view and VERSION in view
    assert "actual 10.5 kWh per 15 min" in view
    assert SITE == "site-0"  # the site write_plot draws by default


# -- what `make demo` installs ---------------------------------------------------------------


def make_dry_run(target: str, tmp_path: Path) -> list[str]:
    """The commands `make TARGET` would run in a fresh clone (no venv yet), not run."""
    result = subprocess.run(
        ["make", "-n", "-B", "-C", str(REPO), target, f"VENV={tmp_path / 'venv'}"],
        capture_output=True, text=True, check=True,
    )
    return result.stdout.splitlines()


def test_make_demo_installs_no_kubernetes_and_keeps_pip_quiet(tmp_path: Path) -> None:
    commands = make_dry_run("demo", tmp_path)
    assert any(line.rstrip().endswith("energy-pipeline demo") for line in commands), commands
    assert not [line for line in commands if "kube install" in line]
    assert not [line for line in commands if "'.[dev]'" in line]  # no test tools either
    pip = [line for line in commands if "pip install" in line]
    assert pip, commands
    # -qq: pip's errors only; -q let ~65 lines of setuptools build warnings through.
    assert all(" -qq " in line for line in pip), pip


def test_make_test_still_installs_the_kubernetes_tools(tmp_path: Path) -> None:
    assert [line for line in make_dry_run("test", tmp_path) if "kube install" in line]
