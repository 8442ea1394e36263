"""`energy-pipeline simulate`: publish simulated (or recorded) sensor readings over MQTT."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from energy_pipeline.core.settings import CommonSettings, MqttSettings, load
from energy_pipeline.core.timeutil import floor_time, parse_duration, parse_time
from energy_pipeline.simulation.publisher import (
    Message,
    MqttPublisher,
    combined_messages,
    replay_messages,
    single_messages,
)
from energy_pipeline.simulation.signals import SimulationConfig, generate

log = logging.getLogger("energy_pipeline.simulate")


@dataclass(frozen=True, kw_only=True)
class SimulatorSettings(CommonSettings, MqttSettings):
    pass


def config_from_args(args: argparse.Namespace, now: datetime) -> SimulationConfig:
    interval = parse_duration(args.interval)
    start = floor_time(parse_time(args.start, now), interval)
    span = parse_duration(args.duration) if args.duration else None
    if span is None and not args.realtime:
        raise SystemExit("--duration is required unless --realtime (then it runs until stopped)")
    steps = int(span / interval) if span else sys.maxsize
    return SimulationConfig(
        sites=args.sites,
        devices=args.devices,
        start=start,
        interval=interval,
        steps=steps,
        seed=args.seed,
        fault_rate=args.fault_rate,
    )


def paced(messages: Iterator[Message], rate: float, stop: threading.Event) -> Iterator[Message]:
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


def realtime(config: SimulationConfig, stop: threading.Event) -> Iterator:
    """Readings with timestamps in the past go out at once; later ones when their time comes."""
    for reading in generate(config):
        while not stop.is_set():
            wait = (reading.ts - datetime.now(UTC)).total_seconds()
            if wait <= 0:
                break
            stop.wait(min(wait, 1.0))
        if stop.is_set():
            return
        yield reading


def run(args: argparse.Namespace) -> int:
    settings = load(SimulatorSettings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.replay:
        messages: Iterator[Message] = replay_messages(Path(args.replay), args.site)
        description: dict[str, object] = {"replay": args.replay}
    else:
        config = config_from_args(args, datetime.now(UTC))
        readings = realtime(config, stop) if args.realtime else generate(config)
        messages = (
            combined_messages(readings) if args.format == "combined" else single_messages(readings)
        )
        description = {
            "sites": config.sites,
            "devices": config.devices,
            "start": config.start.isoformat(),
            "interval_s": config.interval.total_seconds(),
            "seed": config.seed,
        }
    publisher = MqttPublisher(
        settings.mqtt_host,
        settings.mqtt_port,
        args.client_id or f"simulator-{uuid.uuid4().hex[:8]}",
        settings.mqtt_username,
        settings.mqtt_password,
        hold_unrouted=args.hold_until_subscribed,
    )
    # A restart would begin a new simulated run (another start, other values): wait instead.
    publisher.connect(timeout=None if args.realtime else 30)
    log.info("simulating", extra=description)
    started = time.monotonic()
    try:
        for n, (topic, payload) in enumerate(paced(messages, args.rate, stop)):
            if args.count and n >= args.count:
                break
            publisher.publish(topic, payload)
    except KeyboardInterrupt:
        pass
    confirmed = publisher.wait_confirmed(timeout=120)
    publisher.stats.seconds = time.monotonic() - started
    publisher.close()
    summary = {
        "published": publisher.stats.published,
        "confirmed": publisher.stats.confirmed,
        "seconds": round(publisher.stats.seconds, 3),
        "msg_per_s": round(publisher.stats.rate, 1),
        "held": publisher.stats.held,
    }
    log.info("simulation finished", extra=summary)
    print(json.dumps(summary), flush=True)
    return 0 if confirmed else 1


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "simulate",
        help="publish simulated building sensor readings over MQTT (MQTT_HOST, MQTT_PORT)",
        description="Publishes energy/<site>/<sensor>/<device> readings, QoS 1. Without "
        "--realtime it publishes --duration of simulated time as fast as possible.",
    )
    p.add_argument("--sites", type=int, default=4)
    p.add_argument("--devices", type=int, default=4, help="devices per sensor type and site")
    p.add_argument("--interval", default="5m", help="time between two readings of a device")
    p.add_argument("--start", default="now", help="ISO time, now, or now-7d (default now)")
    p.add_argument("--duration", default=None, help="simulated time span, e.g. 48h")
    p.add_argument(
        "--realtime", action="store_true", help="publish each reading when its time comes"
    )
    p.add_argument("--rate", type=float, default=0, help="max messages per second (0: no limit)")
    p.add_argument("--count", type=int, default=0, help="stop after this many messages")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--fault-rate", type=float, default=0.001, help="probability of a faulty reading"
    )
    p.add_argument("--format", choices=["single", "combined"], default="single")
    p.add_argument("--replay", default=None, help="CSV file to publish instead of simulating")
    p.add_argument("--site", default="site-0", help="site id for --replay files without one")
    p.add_argument("--client-id", default=None)
    p.add_argument(
        "--hold-until-subscribed", action="store_true",
        help="send a reading the broker routed to no subscriber (MQTT 5 reason 0x10) again "
        "every second until one subscribes: nothing is lost to a pipeline that starts later",
    )
    p.set_defaults(func=run)
