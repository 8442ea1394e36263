"""`energy-pipeline simulate`: publish simulated (or recorded) sensor readings over MQTT.

Without --realtime a run publishes a window of simulated time as fast as the broker takes
it, and that window ends at now unless --start says otherwise: the bridge rejects readings
more than MAX_FUTURE_S ahead of its clock, so a window reaching into the future is announced
before anything is published and its rejected part counted apart in the summary.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from energy_pipeline.core.contracts import DEFAULT_LIMITS, Reading, WeatherForecast
from energy_pipeline.core.errors import USAGE, CommandError
from energy_pipeline.core.settings import (
    DURATION_FORMAT,
    CommonSettings,
    MqttSettings,
    env,
    environment_help,
    load,
)
from energy_pipeline.core.timeutil import floor_time, parse_duration, parse_time
from energy_pipeline.dataplane.mqtt_client import (
    broker_unreachable,
    check_reachable,
    connect_refused,
    tls_context,
)
from energy_pipeline.simulation.publisher import (
    MqttPublisher,
    MqttRefused,
    Outgoing,
    item_time,
    outgoing,
    replay_messages,
)
from energy_pipeline.simulation.signals import (
    FORECAST_EVERY_HOURS,
    FORECAST_HOURS,
    SimulationConfig,
    forecast_issue_times,
    forecast_issues,
    generate,
)

log = logging.getLogger("energy_pipeline.simulate")

# The bridge's default MAX_FUTURE_S: the simulator cannot see the bridge's setting, so it
# warns against the default (a bridge configured to accept more simply stores more).
BRIDGE_MAX_FUTURE = DEFAULT_LIMITS.max_future


@dataclass(frozen=True, kw_only=True)
class SimulatorSettings(CommonSettings, MqttSettings):
    simulator_weather_forecasts: bool = env(
        "SIMULATOR_WEATHER_FORECASTS", True,
        doc=f"publish a weather forecast per site every {FORECAST_EVERY_HOURS} h of simulated "
        f"time (at the UTC hours divisible by it, hourly for the next {FORECAST_HOURS} h, its "
        "error growing with the lead time) on <root>/<site>/weather_forecast/simulator; "
        "false: readings only",
    )


@dataclass(frozen=True)
class Window:
    """What a simulated run publishes, decided once from the options and the clock."""

    config: SimulationConfig
    # Steps (timestamps) more than the bridge's future limit ahead of the clock at start.
    future_steps: int = 0
    # The latest time the bridge takes at the start (None: --realtime, which publishes
    # nothing before its time).
    latest: datetime | None = None

    @property
    def end(self) -> datetime:
        """The end of the simulated window (exclusive)."""
        return self.config.start + self.config.steps * self.config.interval

    @property
    def first_future(self) -> datetime | None:
        if not self.future_steps:
            return None
        return self.config.start + (self.config.steps - self.future_steps) * self.config.interval


def _duration(text: str, option: str, errors: list[str]) -> timedelta | None:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        errors.append(f"{option}: {exc}")
        return None
    if value <= timedelta(0):
        errors.append(f"{option}: must be more than 0, got {text!r}")
        return None
    return value


def future_steps(config: SimulationConfig, now: datetime, limit: timedelta) -> int:
    """How many of the run's timestamps lie more than `limit` ahead of `now`."""
    latest = now + limit
    if config.start > latest:
        return config.steps
    in_time = int((latest - config.start) / config.interval) + 1
    return max(0, config.steps - in_time)


def window_from_args(
    args: argparse.Namespace, now: datetime, limit: timedelta = BRIDGE_MAX_FUTURE
) -> Window:
    """The simulated window; every problem with the options in one CommandError (exit 2).

    Without --start: a --realtime run starts at now and is paced to the clock; any other
    run ends at now (start = now - duration, floored to the interval). An explicit --start
    is taken as given, and its readings more than `limit` ahead of `now` are counted.
    """
    errors: list[str] = []
    interval = _duration(args.interval, "--interval", errors)
    span = _duration(args.duration, "--duration", errors) if args.duration else None
    if args.duration is None and not args.realtime:
        errors.append("--duration is required unless --realtime (which runs until stopped)")
    for option, value, low in (
        ("--sites", args.sites, 1), ("--devices", args.devices, 1),
        ("--rate", args.rate, 0), ("--count", args.count, 0),
    ):
        if value < low:
            errors.append(f"{option} must be at least {low}, got {value}")
    if not 0 <= args.fault_rate <= 1:
        errors.append(f"--fault-rate must be between 0 and 1, got {args.fault_rate}")
    start: datetime | None = None
    if args.start is not None:
        try:
            start = parse_time(args.start, now)
        except ValueError:
            errors.append(
                f"--start: not a time: {args.start!r} (use ISO 8601 such as "
                "2025-01-01T00:00:00Z, now, now-7d or now+1h)"
            )
    if interval is not None and span is not None and span < interval:
        errors.append(f"--duration {args.duration} is shorter than --interval {args.interval}")
    if errors or interval is None:
        raise CommandError("; ".join(errors), status=USAGE)
    if start is None:
        start = now if args.realtime or span is None else now - span
    config = SimulationConfig(
        sites=args.sites,
        devices=args.devices,
        start=floor_time(start, interval),
        interval=interval,
        steps=int(span / interval) if span else sys.maxsize,
        seed=args.seed,
        fault_rate=args.fault_rate,
    )
    # --realtime publishes nothing before its time comes.
    if args.realtime:
        return Window(config)
    return Window(config, future_steps(config, now, limit), now + limit)


def future_forecasts(window: Window) -> tuple[int, int]:
    """(ahead of the bridge's future limit, all): the forecasts a window issues."""
    times = list(forecast_issue_times(window.config))
    ahead = sum(window.latest is not None and t > window.latest for t in times)
    return ahead * window.config.sites, len(times) * window.config.sites


def config_from_args(args: argparse.Namespace, now: datetime) -> SimulationConfig:
    return window_from_args(args, now).config


def messages_per_step(config: SimulationConfig, fmt: str) -> int:
    return config.sites * config.devices if fmt == "combined" else config.readings_per_step


def future_warning(window: Window, fmt: str, limit: timedelta = BRIDGE_MAX_FUTURE,
                   forecasts: tuple[int, int] = (0, 0)) -> str:
    """The one line printed before publishing a window that reaches into the future;
    `forecasts` as `future_forecasts` counts them (none: not mentioned)."""
    per_step = messages_per_step(window.config, fmt)
    ahead = window.future_steps * per_step
    total = window.config.steps * per_step
    first = window.first_future
    assert first is not None
    also = f" and {forecasts[0]:,} of {forecasts[1]:,} weather forecasts" if forecasts[0] else ""
    return (
        f"energy-pipeline simulate: warning: {ahead:,} of {total:,} messages (timestamps from "
        f"{first.isoformat()} to {(window.end - window.config.interval).isoformat()}){also} "
        f"are more than {int(limit.total_seconds())} s ahead of now; the bridge rejects them as "
        "future_timestamp (MAX_FUTURE_S). Omit --start to end the window at now, or add "
        "--realtime to publish each reading when its time comes."
    )


def paced(messages: Iterator[Outgoing], rate: float, stop: threading.Event
          ) -> Iterator[Outgoing]:
    """At most `rate` messages per second (0: unpaced)."""
    started = time.monotonic()
    for count, message in enumerate(messages):
        if stop.is_set():
            return
        if rate > 0:
            delay = started + count / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield message


Item = Reading | WeatherForecast


def simulated(config: SimulationConfig, weather: bool) -> Iterator[Item]:
    """The run's readings and, with `weather`, its forecasts, each forecast after the readings
    of its issue time."""
    readings = generate(config)
    if not weather:
        return readings
    return heapq.merge(readings, forecast_issues(config), key=item_time)


def realtime(items: Iterable[Item], stop: threading.Event) -> Iterator[Item]:
    """Readings (and forecasts) of the past go out at once; later ones when their time comes."""
    for item in items:
        while not stop.is_set():
            wait = (item_time(item) - datetime.now(UTC)).total_seconds()
            if wait <= 0:
                break
            stop.wait(min(wait, 1.0))
        if stop.is_set():
            return
        yield item


@dataclass
class Tally:
    """What a run published, as its summary counts it."""

    latest: datetime | None  # messages after it are rejected by the bridge as future
    readings: int = 0
    future: int = 0
    forecasts: int = 0
    forecasts_future: int = 0

    def add(self, message: Outgoing) -> None:
        ahead = (self.latest is not None and message.time is not None
                 and message.time > self.latest)
        if message.forecast:
            self.forecasts += 1
            self.forecasts_future += ahead
        else:
            self.readings += 1
            self.future += ahead


def run(args: argparse.Namespace) -> int:
    # The options first: a wrong one is reported before anything connects.
    window = None if args.replay else window_from_args(args, datetime.now(UTC))
    settings = load(SimulatorSettings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if window is None:
        messages: Iterator[Outgoing] = (
            Outgoing(None, topic, payload)
            for topic, payload in replay_messages(Path(args.replay), args.site,
                                                  settings.mqtt_topic_root))
        description: dict[str, object] = {"replay": args.replay}
        tally = Tally(None)
    else:
        config = window.config
        weather = settings.simulator_weather_forecasts
        if window.future_steps:
            forecasts = future_forecasts(window) if weather else (0, 0)
            print(future_warning(window, args.format, forecasts=forecasts), file=sys.stderr,
                  flush=True)
        items = simulated(config, weather)
        messages = outgoing(realtime(items, stop) if args.realtime else items, args.format,
                            settings.mqtt_topic_root)
        tally = Tally(window.latest)
        description = {
            "sites": config.sites,
            "devices": config.devices,
            "start": config.start.isoformat(),
            "interval_s": config.interval.total_seconds(),
            "seed": config.seed,
            "weather_forecasts": weather,
        }
    publisher = MqttPublisher(
        settings.mqtt_host,
        settings.mqtt_port,
        # After the MQTT user when there is one: the only ids the broker lets it use.
        args.client_id or f"{settings.mqtt_username or 'simulator'}-{uuid.uuid4().hex[:8]}",
        settings,
        hold_unrouted=args.hold_until_subscribed,
    )
    # A restart would begin a new simulated run (another start, other values): wait instead.
    # A run that is not --realtime fails at once, in one line, when the broker is not there
    # or its certificate is not trusted.
    if not args.realtime:
        check_reachable(settings.mqtt_host, settings.mqtt_port, tls=tls_context(settings))
    try:
        publisher.connect(timeout=None if args.realtime else 30)
    except MqttRefused as exc:
        publisher.close()
        raise connect_refused(settings, exc.reason) from None
    except ConnectionError:
        publisher.close()
        raise broker_unreachable(
            settings.mqtt_host, settings.mqtt_port, "no CONNACK within 30 s"
        ) from None
    log.info("simulating", extra=description)
    started = time.monotonic()
    try:
        for n, message in enumerate(paced(messages, args.rate, stop)):
            if args.count and n >= args.count:
                break
            publisher.publish(message.topic, message.payload)
            tally.add(message)
    except KeyboardInterrupt:
        pass
    confirmed = publisher.wait_confirmed(timeout=120)
    publisher.stats.seconds = time.monotonic() - started
    publisher.close()
    summary: dict[str, object] = {
        # Messages of readings (the forecasts are counted apart below).
        "published": tally.readings,
        # Acknowledged by the broker and within the bridge's future limit: what the
        # pipeline stores. The broker's acknowledgements do not say which message they
        # confirm, so every forecast is taken off: never more than were confirmed.
        "confirmed": max(0, publisher.stats.confirmed - tally.forecasts - tally.future),
        # Published but ahead of the bridge's default future limit: rejected there.
        "future": tally.future,
        "forecasts": tally.forecasts,
        "forecasts_future": tally.forecasts_future,
        "seconds": round(publisher.stats.seconds, 3),
        "msg_per_s": round(publisher.stats.rate, 1),
        "held": publisher.stats.held,
    }
    if window is not None:
        summary.update(start=window.config.start.isoformat(),
                       interval_s=window.config.interval.total_seconds())
    log.info("simulation finished", extra=summary)
    print(json.dumps(summary), flush=True)
    return 0 if confirmed else 1


DESCRIPTION = f"""\
Publishes simulated building sensor readings on <MQTT_TOPIC_ROOT>/<site>/<sensor>/<device> (MQTT 5,
QoS 1): --sites x 5 sensors x --devices streams, one reading each per --interval,
reproducible from --seed (or a recorded CSV with --replay). Unless SIMULATOR_WEATHER_FORECASTS
is false, each site's weather forecast too, on
<MQTT_TOPIC_ROOT>/<site>/weather_forecast/simulator: issued at the UTC hours of the simulated
time divisible by {FORECAST_EVERY_HOURS} (like readings: at once, or with --realtime when the
time comes) for the next {FORECAST_HOURS} hours, the simulated weather plus an error that grows
with the lead time.

Without --realtime it publishes --duration of simulated time as fast as the broker takes it,
ending at now (start = now - duration) unless --start is given; a window reaching more than
the bridge's MAX_FUTURE_S (300 s by default) past now is warned about before publishing, and
those messages are counted as "future", not "confirmed", in the summary. With --realtime
readings up to now go out at once and later ones when their time comes (from --start,
default now, for --duration or until stopped).

Durations (--interval, --duration) are {DURATION_FORMAT}. Times (--start) are ISO 8601 (UTC
without an offset), now, now-<duration> or now+<duration>.

At the end one JSON line on stdout: published, confirmed, future (messages of readings),
forecasts, forecasts_future (weather forecasts; those past the bridge's limit), seconds,
msg_per_s, held, start, interval_s. Exit status 1 when the broker did not confirm everything
within 120 s."""


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "simulate",
        help="publish simulated building sensor readings over MQTT (MQTT_HOST, MQTT_PORT)",
        description=DESCRIPTION,
        epilog=environment_help(SimulatorSettings),
    )
    p.add_argument("--sites", type=int, default=4, help="number of sites")
    p.add_argument(
        "--devices", type=int, default=4,
        help="devices per sensor type and site",
    )
    p.add_argument(
        "--interval", default="5m",
        help="simulated time between two readings of a device, a duration",
    )
    p.add_argument(
        "--start", default=None,
        help="first simulated time: ISO 8601, now, now-7d (default: now - duration, so "
        "the window ends at now; with --realtime: now)",
    )
    p.add_argument(
        "--duration", default=None,
        help="simulated time span, a duration such as 48h (required unless --realtime, "
        "which then runs until stopped)",
    )
    p.add_argument(
        "--realtime", action="store_true",
        help="publish each reading when its time comes (readings before now at once)",
    )
    p.add_argument(
        "--rate", type=float, default=0,
        help="at most this many messages per second (default: %(default)s, no limit)",
    )
    p.add_argument(
        "--count", type=int, default=0,
        help="stop after this many messages (default: %(default)s, all)",
    )
    p.add_argument("--seed", type=int, default=42, help="random seed")
    p.add_argument(
        "--fault-rate", type=float, default=0.001,
        help="probability of a faulty reading, 0..1",
    )
    p.add_argument(
        "--format", choices=["single", "combined"], default="single",
        help="single: one message per reading; combined: the original report's record of "
        "all five sensors per device and time",
    )
    p.add_argument("--replay", default=None, help="CSV file to publish instead of simulating")
    p.add_argument(
        "--site", default="site-0",
        help="site id for --replay files without one",
    )
    p.add_argument(
        "--client-id", default=None,
        help="MQTT client id (default: <MQTT_USERNAME or simulator>-<random>); the same id "
        "resumes its session",
    )
    p.add_argument(
        "--hold-until-subscribed", action="store_true",
        help="send a reading the broker routed to no subscriber (MQTT 5 reason 0x10) again "
        "every second until one subscribes: nothing is lost to a pipeline that starts later",
    )
    p.set_defaults(func=run)
