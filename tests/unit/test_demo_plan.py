"""The demo's plan: a run with a duration ends with forecasts, so its backfill must fit."""

from __future__ import annotations

import argparse

import pytest
from energy_harness.demo import (
    BACKFILL_MSG_PER_S,
    STARTUP_S,
    TRAIN_S,
    DemoPlan,
    choose_interval,
    history_hours,
)

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


@pytest.mark.parametrize("duration", [120, 180, 300, 600, 1200, 3600])
def test_the_chosen_backfill_fits_the_duration(duration: float) -> None:
    plan = DemoPlan.from_args(args(duration=duration))
    per_hour = dict((("5m", 12), ("15m", 4), ("1h", 1)))[plan.interval]
    readings = plan.streams * history_hours(plan.history) * per_hour
    assert readings / BACKFILL_MSG_PER_S + STARTUP_S + TRAIN_S <= duration


def test_short_runs_go_hourly_long_runs_finer() -> None:
    assert DemoPlan.from_args(args(duration=120)).interval == "1h"
    assert DemoPlan.from_args(args(duration=3600)).interval == "5m"
    assert DemoPlan.from_args(args()).interval == "15m"  # until Ctrl-C
    assert DemoPlan.from_args(args(fast=True, duration=3600)).interval == "1h"


def test_the_simulator_gets_the_plan() -> None:
    command = DemoPlan.from_args(args(duration=120)).simulate_command()
    assert command[command.index("--interval") + 1] == "1h"
    assert command[command.index("--start") + 1] == "now-15d"
    assert choose_interval(40, 360, 0) == "15m"
