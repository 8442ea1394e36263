"""`energy-pipeline demo`: the whole pipeline on one machine, no Kubernetes, no Docker.

Starts a 3-node Kafka cluster, PostgreSQL and HiveMQ CE as local processes, then runs the
very commands the operator deploys, with the same environment variables: topics, migrate,
bridge, two ingest workers, inference, a simulator that backfills history and then goes
live, and training once the history is in. Shows a live view and writes a forecast plot.
Ctrl-C (or --duration) stops everything; nothing is left running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
from energy_pipeline.core.errors import USAGE, CommandError
from energy_pipeline.core.settings import DURATION_FORMAT
from energy_pipeline.core.timeutil import parse_duration

from energy_harness.localstack import KafkaCluster, PostgresServer
from energy_harness.localstack.hivemq import HiveMQBroker
from energy_harness.localstack.install import install_all
from energy_harness.localstack.process import free_port
from energy_harness.localstack.workers import WorkerProcess, energy_pipeline_argv, service_env
from energy_harness.pki import grpc_tls_env

log = logging.getLogger("energy_harness.demo")


# Intervals the demo simulates at, finest first, with readings per hour.
INTERVALS: tuple[tuple[str, int], ...] = (("5m", 12), ("15m", 4), ("1h", 1))
# Planning figures for a run with --duration: seconds before the simulator starts (services,
# topics, migrations, workers), seconds to train, and the backfill rate HiveMQ CE delivers
# to the bridge's shared subscription on a busy 2-core machine (about 1k msg/s when quiet).
STARTUP_S = 35.0
TRAIN_S = 20.0
BACKFILL_MSG_PER_S = 250.0
# From the promotion to the first stored forecast: inference reloads within MODEL_REFRESH_S
# (5 s here), ingest drains the newest owed hour first.
FIRST_FORECAST_S = 15.0
SENSOR_TYPES = 5
# The site the live view and the plot show: both name its model, and no other.
SITE = "site-0"


def consumption_unit(interval: str) -> str:
    """What an hourly mean of consumption readings is in: each reading is the kWh used in
    its own interval, so the hour's mean is kWh per interval (per 15 min, per 1 h)."""
    minutes = parse_duration(interval) / timedelta(minutes=1)
    span = f"{minutes / 60:g} h" if minutes >= 60 else f"{minutes:g} min"
    return f"kWh per {span}"


def history_hours(history: str) -> float:
    """'15d', '36h' -> hours; the grammar of the simulator's `--start now-<history>`."""
    return parse_duration(history) / timedelta(hours=1)


def planned_seconds(streams: int, hours: float, per_hour: int) -> float:
    """How long a run takes from start to its first stored forecast, by the figures above."""
    return (STARTUP_S + streams * hours * per_hour / BACKFILL_MSG_PER_S + TRAIN_S
            + FIRST_FORECAST_S)


def shortest_duration(streams: int, hours: float) -> int:
    """The shortest --duration that ends with forecasts: hourly readings, whole 10 s."""
    return int(-(-planned_seconds(streams, hours, INTERVALS[-1][1]) // 10) * 10)


def choose_interval(streams: int, hours: float, duration_s: float) -> str:
    """The finest interval whose backfill leaves time to train and forecast in `duration_s`.

    Without a duration: 15 minutes, history in within a couple of minutes. With one, the
    run must end with forecasts stored, so a short run simulates hourly readings (a
    duration too short even for those is refused before anything starts: DemoPlan).
    """
    if not duration_s:
        return "15m"
    for interval, per_hour in INTERVALS:
        if planned_seconds(streams, hours, per_hour) <= duration_s:
            return interval
    return INTERVALS[-1][0]


def missing_stages(db: dict[str, object], logs: Path) -> list[str]:
    """What the run did not produce, each with where to look: empty when it ended with
    readings, a model and forecasts of the plotted site."""
    missing = []
    if not db["rows"]:
        missing.append(f"readings: none was stored (bridge and ingest logs in {logs})")
    if not db["model"]:
        latest = db["latest_reading"]
        reached = f", the backfill had reached {latest:%Y-%m-%d %H:%M} UTC" if latest else ""
        missing.append(f"model: none was promoted for {db['site']} (training runs once the "
                       f"history is in{reached}; train output above)")
    if not db["site_forecasts"]:
        missing.append(f"forecasts: none was stored for {db['site']} (inference and ingest "
                       f"logs in {logs})")
    return missing


@dataclass(frozen=True)
class DemoPlan:
    sites: int
    devices: int
    interval: str
    history: str
    ingest_workers: int = 2

    @property
    def streams(self) -> int:
        return self.sites * SENSOR_TYPES * self.devices

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DemoPlan:
        """The plan; CommandError when --duration cannot end with forecasts, before anything
        starts, naming the shortest that can."""
        # --fast: enough history for the default model (two weeks of hours), small enough to
        # stream in well under a minute on two cores.
        history = "15d" if args.fast else args.history
        streams = args.sites * SENSOR_TYPES * args.devices
        hours = history_hours(history)
        shortest = shortest_duration(streams, hours)
        if args.duration and args.duration < shortest:
            backfill = streams * hours / BACKFILL_MSG_PER_S
            raise CommandError(
                f"--duration {args.duration:g} is too short to end with forecasts: {history} of "
                f"hourly history from {args.sites} sites x {args.devices} devices takes about "
                f"{backfill:.0f} s to publish, and starting, training and the first forecast "
                f"about {STARTUP_S + TRAIN_S + FIRST_FORECAST_S:.0f} s more",
                fix=f"give --duration {shortest} (make demo DURATION={shortest}) or more, or "
                "less --history, --sites or --devices",
                status=USAGE,
            )
        interval = "1h" if args.fast else choose_interval(streams, hours, args.duration)
        return cls(sites=args.sites, devices=args.devices, interval=interval, history=history)

    def simulate_command(self) -> list[str]:
        return [
            "simulate",
            "--realtime",
            "--start",
            f"now-{self.history}",
            "--interval",
            self.interval,
            "--sites",
            str(self.sites),
            "--devices",
            str(self.devices),
            "--client-id",
            "demo-simulator",
        ]


@dataclass
class Rates:
    """Per-second rates from successive counter readings."""

    last: dict[str, tuple[float, float]] = field(default_factory=dict)

    def rate(self, name: str, value: float) -> float:
        now = time.monotonic()
        previous = self.last.get(name)
        self.last[name] = (now, value)
        if previous is None or now <= previous[0]:
            return 0.0
        return max(0.0, (value - previous[1]) / (now - previous[0]))


def database_summary(dsn: str, site: str = SITE) -> dict[str, object]:
    """Totals of the whole pipeline; model and latest forecast of `site` only."""
    with psycopg2.connect(dsn, connect_timeout=3) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*), count(DISTINCT (site_id, sensor, device_id)), max(ts) FROM readings"
        )
        rows, streams, latest = cur.fetchone()
        cur.execute("SELECT count(*), count(*) FILTER (WHERE site_id = %s), max(issued_at)"
                    " FROM forecasts", (site,))
        forecasts, site_forecasts, issued = cur.fetchone()
        cur.execute(
            """SELECT version FROM models WHERE promoted AND site_id = %s
               ORDER BY promoted_at DESC NULLS LAST LIMIT 1""",
            (site,),
        )
        model = cur.fetchone()
        cur.execute(
            """SELECT f.target_time, f.p50, f.p10, f.p90, h.avg_energyconsumption
               FROM forecasts f JOIN hourly_features h
                 ON h.site_id = f.site_id AND h.hour = f.target_time
               WHERE f.horizon = 1 AND f.site_id = %s
               ORDER BY f.target_time DESC LIMIT 1""",
            (site,),
        )
        last_pair = cur.fetchone()
    return {
        "site": site,
        "rows": rows,
        "streams": streams,
        "latest_reading": latest,
        "forecasts": forecasts,
        "site_forecasts": site_forecasts,
        "latest_issue": issued,
        "model": model[0] if model else None,
        "last_pair": last_pair,
    }


def render_view(
    stage_rates: dict[str, float], lag: float, db: dict[str, object], unit: str
) -> str:
    pair = db["last_pair"]
    pair_text = (
        f"{pair[0]:%Y-%m-%d %H:%M} forecast {pair[1]:.1f} [{pair[2]:.1f}, {pair[3]:.1f}]"
        f" actual {pair[4]:.1f} {unit}"
        if pair
        else "(none yet)"
    )
    latest = db["latest_reading"]
    stored = f"{stage_rates.get('written', 0):9.0f} rows/s  total {db['rows']:,}"
    if latest:
        stored += f" in {db['streams']} streams, latest {latest:%Y-%m-%d %H:%M}"
    model = db["model"] or "(training pending)"
    return "\n".join(
        [
            "energy-pipeline demo   (Ctrl-C stops everything)",
            "",
            f"  MQTT -> bridge      {stage_rates.get('bridge', 0):9.0f} msg/s",
            f"  bridge -> Kafka     {stage_rates.get('produced', 0):9.0f} readings/s",
            f"  Kafka -> ingest     {stage_rates.get('ingest', 0):9.0f} msg/s"
            f"   consumer lag {lag:,.0f}",
            f"  stored              {stored}",
            f"  forecasts           {db['forecasts']:,} points",
            f"  {db['site']} model        {model}",
            f"  {db['site']} 1 h ahead    {pair_text}",
        ]
    )


def forecast_figure(
    actual: list[tuple[datetime, float]],
    forecast: list[tuple[datetime, float, float, float, str]],
    site: str,
    unit: str,
) -> Any:
    """The plot of `site`: hourly consumption and its latest forecast (target time, p10,
    p50, p90, model version) with the P10-P90 band; the model named is the forecast's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from energy_pipeline.forecasting.plot import draw_forecast

    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=100)
    model = forecast[-1][4] if forecast else ""
    draw_forecast(
        ax,
        ([a[0] for a in actual], [a[1] for a in actual]),
        tuple([f[i] for f in forecast] for i in range(4)),  # type: ignore[arg-type]
        "forecast",
        f"consumption, {unit} (hourly mean)",
    )
    ax.set_title(f"{site}: energy consumption and the latest forecast (model {model})"
                 if forecast else f"{site}: energy consumption (no forecast yet)")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def write_plot(dsn: str, path: Path, unit: str, site: str = SITE) -> bool:
    """`forecast_figure` of the last 7 days of `site` from the database, as a PNG."""
    import matplotlib.pyplot as plt

    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            """SELECT hour, avg_energyconsumption FROM hourly_features
               WHERE site_id = %s AND avg_energyconsumption IS NOT NULL
               ORDER BY hour DESC LIMIT 24 * 7""",
            (site,),
        )
        actual = sorted(cur.fetchall())
        cur.execute(
            """SELECT target_time, p10, p50, p90, model_version FROM forecasts
               WHERE site_id = %s AND issued_at = (SELECT max(issued_at) FROM forecasts
                                                   WHERE site_id = %s)
               ORDER BY target_time""",
            (site, site),
        )
        forecast = cur.fetchall()
    if not actual:
        return False
    fig = forecast_figure(actual, forecast, site, unit)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path.stat().st_size > 0


def run_command(command: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        energy_pipeline_argv(command), env=env, capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"energy-pipeline {' '.join(command)} failed:\n{result.stdout[-2000:]}"
            f"{result.stderr[-2000:]}"
        )
    return result.stdout


def backfill_done(dsn: str, history_end: datetime, sites: int) -> bool:
    with psycopg2.connect(dsn, connect_timeout=3) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(DISTINCT site_id) FROM hourly_features WHERE hour >= %s",
            (history_end - timedelta(hours=2),),
        )
        return int(cur.fetchone()[0]) >= sites


def run(args: argparse.Namespace) -> int:
    plan = DemoPlan.from_args(args)
    print(
        f"plan: {plan.sites} sites x {SENSOR_TYPES} sensors x {plan.devices} devices, "
        f"{plan.history} of history at one reading per {plan.interval}, then live",
        flush=True,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    interactive = sys.stdout.isatty() and not args.no_view
    unit = consumption_unit(plan.interval)
    base = Path(args.data_dir) if args.data_dir else Path(f"/tmp/energy-demo-{os.getpid()}")
    base.mkdir(parents=True, exist_ok=True)
    print("installing what is missing (cached in ~/.cache/energy-pipeline) ...", flush=True)
    install_all()
    kafka = KafkaCluster(base / "kafka")
    postgres = PostgresServer(base / "postgres")
    broker = HiveMQBroker(base / "hivemq")
    workers: list[WorkerProcess] = []
    started = time.monotonic()
    try:
        print("starting PostgreSQL, HiveMQ CE and a 3-node Kafka cluster ...", flush=True)
        postgres.start()
        broker.start()
        kafka.start()
        grpc_port = free_port()
        env = service_env(
            kafka.bootstrap_servers,
            postgres.dsn,
            broker.host,
            broker.port,
            # The server is TLS-only; the workers verify it as in a cluster (verify-full).
            DATABASE_CA_FILE=str(postgres.ca_file),
            PIPELINE_NAME="demo",
            GRPC_PORT=str(grpc_port),
            INFERENCE_TARGET=f"127.0.0.1:{grpc_port}",
            MODEL_REFRESH_S="5",
            TRAIN_HISTORY_DAYS="60",
            TRAIN_BACKTEST_DAYS="3",
        )
        print(
            json.dumps(
                {
                    "kafka": kafka.bootstrap_servers,
                    "database": postgres.dsn,
                    "mqtt": broker.url,
                    "logs": str(base / "logs"),
                }
            ),
            flush=True,
        )
        run_command(["topics", "create"], env)
        run_command(["migrate"], env)
        logs = base / "logs"
        workers.append(
            WorkerProcess(
                "bridge", ["bridge"], {**env, "MQTT_CLIENT_ID": "demo-bridge"}, logs
            ).start()
        )
        workers[0].wait_ready()
        # Mutual TLS between ingest and inference, as on Kubernetes: certificates of a
        # CA made for this demo, in Secret-volume layout under the data directory.
        grpc_tls = grpc_tls_env(base / "grpc-tls")
        for i in range(plan.ingest_workers):
            workers.append(WorkerProcess(
                f"ingest-{i}", ["ingest"], {**env, **grpc_tls["ingest"]}, logs).start())
        workers.append(WorkerProcess(
            "inference", ["inference"], {**env, **grpc_tls["inference"]}, logs).start())
        history_end = datetime.now(UTC)
        workers.append(
            WorkerProcess("simulate", plan.simulate_command(), env, logs).start(wait_ready=False)
        )
        trained = False
        rates = Rates()
        deadline = started + args.duration if args.duration else None
        # The plan's figures are estimates: on a slower machine the first forecast may come
        # after --duration. Then the run waits for it, up to as long again, and says so.
        overrun, waiting = 0.0, False
        while not stop.is_set():
            db = database_summary(postgres.dsn)
            if deadline and time.monotonic() >= deadline:
                overrun = time.monotonic() - deadline
                if db["site_forecasts"] or overrun >= args.duration:
                    break
                if not waiting:
                    waiting = True
                    print(f"--duration {args.duration:g} reached before the first forecast: "
                          f"waiting for it, at most {args.duration:g} s more", flush=True)
            for worker in workers:
                if not worker.alive():
                    raise RuntimeError(f"{worker.name} exited:\n{worker.process.log_tail()}")  # type: ignore[union-attr]
            if not trained and backfill_done(postgres.dsn, history_end, plan.sites):
                print("history is in: training models ...", flush=True)
                run_command(["train"], env)
                trained = True
            stage = {
                "bridge": rates.rate("bridge", workers[0].metric("energy_messages_received_total")),
                "produced": rates.rate(
                    "produced", workers[0].metric("energy_readings_produced_total")
                ),
                "ingest": rates.rate(
                    "ingest",
                    sum(
                        w.metric("energy_messages_received_total")
                        for w in workers[1 : 1 + plan.ingest_workers]
                    ),
                ),
                "written": rates.rate(
                    "written",
                    sum(
                        w.metric("energy_readings_written_total")
                        for w in workers[1 : 1 + plan.ingest_workers]
                    ),
                ),
            }
            lag = sum(w.metric("energy_consumer_lag") for w in workers[1 : 1 + plan.ingest_workers])
            view = render_view(stage, lag, db, unit)
            if interactive:
                print("\033[2J\033[H" + view, flush=True)
            else:
                print(view.replace("\n", " | "), flush=True)
            stop.wait(2.0)
        summary = database_summary(postgres.dsn)
        plotted = write_plot(postgres.dsn, out / "forecast.png", unit)
        missing = missing_stages(summary, logs)
        result = {
            "site": summary["site"],
            "rows": summary["rows"],
            "streams": summary["streams"],
            "forecasts": summary["forecasts"],
            "model": summary["model"],
            "plot": str(out / "forecast.png") if plotted else None,
            "seconds": round(time.monotonic() - started, 1),
            "overrun_seconds": round(overrun, 1),
            "missing": missing,
        }
        (out / "summary.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(json.dumps(result, default=str), flush=True)
        if missing and not stop.is_set():
            # Ctrl-C before the end is the user's choice; a run that had its time and
            # still lacks a stage is a failure, said as one.
            print("the demo ended without " + "; ".join(missing), file=sys.stderr, flush=True)
            return 1
        return 0
    finally:
        print("stopping ...", flush=True)
        for worker in reversed(workers):
            with contextlib.suppress(Exception):
                worker.stop(timeout=30)
        kafka.cleanup()
        broker.cleanup()
        postgres.cleanup()
        if not args.data_dir:
            shutil.rmtree(base, ignore_errors=True)


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "demo",
        help="the whole pipeline on this machine: real Kafka, PostgreSQL, HiveMQ, all workers",
        description=(
            "Starts a 3-node Kafka cluster, PostgreSQL and HiveMQ CE as local processes on free "
            "ports, then the commands the operator deploys with the same environment "
            "variables: topics create, migrate, bridge, two ingest workers, inference, a "
            "simulator that backfills --history and then publishes live, and train once the "
            "history is in. Shows a live view; when it stops it writes forecast.png and "
            "summary.json to --out and stops every process it started. Needs no Docker and "
            "no Kubernetes."
        ),
        epilog=f"--history is a duration: {DURATION_FORMAT}.",
    )
    p.add_argument(
        "--duration", type=float, default=0, help="seconds to run; 0: until Ctrl-C"
    )
    p.add_argument(
        "--fast", action="store_true",
        help="15 days of hourly history whatever --history and --duration say (what CI runs)",
    )
    p.add_argument("--sites", type=int, default=2, help="simulated buildings")
    p.add_argument("--devices", type=int, default=4, help="devices per sensor type and site")
    p.add_argument(
        "--history", default="15d",
        help="simulated history published before going live, a duration (15d, 360h); "
        "the interval between readings is chosen to fit --duration",
    )
    p.add_argument("--out", default="demo-out", help="where forecast.png and summary.json go")
    p.add_argument(
        "--data-dir", default=None,
        help="keep the services' data here (default: a temporary directory, removed at the end)",
    )
    p.add_argument("--no-view", action="store_true", help="plain log lines instead of a live view")
    p.set_defaults(func=run)
