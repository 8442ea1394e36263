"""`simulate`'s window and options, with the clock injected: without --realtime a run ends at
now unless --start says otherwise, and what the bridge would reject as future is announced."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from energy_harness.localstack.workers import energy_pipeline_argv
from energy_pipeline.cli import build_parser
from energy_pipeline.core.errors import USAGE, CommandError
from energy_pipeline.simulation.commands import (
    BRIDGE_MAX_FUTURE,
    future_steps,
    future_warning,
    window_from_args,
)
from energy_pipeline.simulation.signals import generate

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 20, 30, 0, tzinfo=UTC)
MESSY_NOW = datetime(2026, 12, 1, 20, 32, 47, 123456, tzinfo=UTC)


def window(*argv: str, now: datetime = NOW):  # type: ignore[no-untyped-def]
    return window_from_args(build_parser("simulate").parse_args(["simulate", *argv]), now)


@pytest.mark.parametrize("now", [NOW, MESSY_NOW])
def test_without_start_the_window_ends_at_now(now: datetime) -> None:
    w = window("--duration", "48h", now=now)
    assert w.config.steps == 576 and w.config.interval == timedelta(minutes=5)
    # Aligned to the interval as before, and whole: the last reading is before now.
    assert w.config.start.timestamp() % 300 == 0
    assert now - timedelta(hours=48, minutes=5) < w.config.start <= now - timedelta(hours=48)
    assert w.end <= now and w.future_steps == 0
    times = sorted({r.ts for r in generate(w.config)})
    assert len(times) == 576 and times[-1] < now and now - times[-1] < timedelta(minutes=10)


def test_realtime_without_start_still_starts_at_now_and_warns_of_nothing() -> None:
    w = window("--realtime", "--duration", "2h", now=MESSY_NOW)
    assert w.config.start == datetime(2026, 12, 1, 20, 30, tzinfo=UTC)
    assert w.future_steps == 0  # paced to the clock: nothing goes out before its time
    assert window("--realtime", now=NOW).future_steps == 0


def test_an_explicit_start_is_taken_as_given() -> None:
    w = window("--duration", "6h", "--start", "2025-06-01T00:00:00Z", "--interval", "1m")
    assert w.config.start == datetime(2025, 6, 1, tzinfo=UTC) and w.future_steps == 0
    back = window("--duration", "2d", "--start", "now-7d", "--interval", "15m")
    assert back.config.start == NOW - timedelta(days=7) and back.future_steps == 0


def test_the_readme_example_of_old_is_announced_with_what_the_bridge_rejects() -> None:
    # The run the issue measured: 4 sites x 5 sensors x 4 devices, 5 min, 48 h from now:
    # the bridge took the readings of now and now + 5 min and rejected the other 45,920.
    w = window("--duration", "48h", "--start", "now")
    assert w.future_steps == 574 and w.first_future == NOW + timedelta(minutes=10)
    line = future_warning(w, "single")
    assert "\n" not in line
    assert "45,920 of 46,080 messages" in line
    first, last = NOW + timedelta(minutes=10), NOW + timedelta(hours=47, minutes=55)
    for words in ("future_timestamp", "MAX_FUTURE_S", "300 s", "Omit --start", "--realtime",
                  first.isoformat(), last.isoformat()):
        assert words in line
    # Combined records carry the five sensors of a device: one message per device and time.
    assert "9,184 of 9,216 messages" in future_warning(w, "combined")


def test_the_future_count_is_the_readings_past_the_limit() -> None:
    w = window("--duration", "2h", "--start", "now-1h", "--interval", "1m", "--sites", "1",
               "--devices", "1")
    limit = NOW + BRIDGE_MAX_FUTURE
    times = sorted({r.ts for r in generate(w.config)})
    assert w.future_steps == sum(t > limit for t in times) == 54
    assert future_steps(w.config, NOW, timedelta(0)) == sum(t > NOW for t in times) == 59
    assert future_steps(w.config, NOW + timedelta(days=1), BRIDGE_MAX_FUTURE) == 0
    assert future_steps(w.config, NOW - timedelta(days=1), BRIDGE_MAX_FUTURE) == 120


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--interval", "5", "--duration", "2h"], ["--interval", "'5'", "a number and a unit"]),
        (["--interval", "0s", "--duration", "2h"], ["--interval", "more than 0"]),
        ([], ["--duration is required"]),
        (["--duration", "2 days"], ["--duration", "not a duration"]),
        (["--duration", "2h", "--start", "yesterday"], ["--start", "not a time", "now-7d"]),
        (["--duration", "2h", "--sites", "0"], ["--sites must be at least 1"]),
        (["--duration", "2h", "--fault-rate", "2"], ["--fault-rate must be between 0 and 1"]),
        (["--duration", "1m", "--interval", "5m"], ["shorter than --interval"]),
    ],
)
def test_bad_options_are_one_usage_error_naming_the_option(
    argv: list[str], words: list[str]
) -> None:
    with pytest.raises(CommandError) as caught:
        window(*argv)
    assert caught.value.status == USAGE
    assert "\n" not in str(caught.value)
    for word in words:
        assert word in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(CommandError) as caught:
        window("--interval", "5", "--devices", "0", "--rate", "-1")
    message = str(caught.value)
    for word in ("--interval", "--duration is required", "--devices", "--rate"):
        assert word in message


def test_help_gives_defaults_units_the_duration_grammar_and_the_variables() -> None:
    commands = build_parser("simulate")._subparsers._group_actions[0]  # type: ignore[union-attr]
    text = " ".join(commands.choices["simulate"].format_help().split())  # type: ignore[attr-defined]
    for words in (
        "(default: 5m)", "(default: 4)", "(default: 42)", "(default: 0.001)",
        "(default: 0, no limit)", "messages per second", "now - duration",
        "ms, s, m, h, d or w", "now-<duration>", "(default: 4)", "ISO 8601", "MAX_FUTURE_S",
        "MQTT_HOST", "MQTT_PORT", "MQTT_USERNAME", "MQTT_PASSWORD", "127.0.0.1", "1883",
    ):
        assert words in text, words


def test_a_bad_option_ends_the_command_in_one_line_with_status_2() -> None:
    result = subprocess.run(
        energy_pipeline_argv(["simulate", "--interval", "5", "--duration", "2h"]),
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == USAGE, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--interval" in lines[0], result.stderr
