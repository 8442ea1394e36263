"""The real `energy-pipeline` against real unreachable addresses: one line on stderr naming the
variable and the address, the exit status, no password; librdkafka's lines throttled."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import psycopg2
import pytest
from energy_harness.localstack.mqtt import MosquittoBroker
from energy_harness.localstack.process import free_port
from energy_harness.localstack.workers import energy_pipeline_argv
from energy_harness.synthetic import synthetic_building
from energy_pipeline.api.auth import entry
from energy_pipeline.core.errors import CommandError
from energy_pipeline.dataplane.mqtt_client import check_reachable
from energy_pipeline.forecasting.hourly_db import write_hourly_frame

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-never-printed"


def run(command: list[str], env: Mapping[str, str], timeout: float = 90
        ) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}}
    return subprocess.run(energy_pipeline_argv(command), env={**base, **env},
                          capture_output=True, text=True, timeout=timeout)


def dead_database() -> tuple[str, int]:
    port = free_port()
    return f"postgresql://energy:{PASSWORD}@127.0.0.1:{port}/energy", port


@pytest.mark.parametrize("command", [["migrate"], ["train"]])
def test_an_unreachable_database_is_one_line(command: list[str]) -> None:
    url, port = dead_database()
    done = run(command, {"DATABASE_URL": url})
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"energy-pipeline {command[0]}: error: cannot connect to PostgreSQL "
                           f"at 127.0.0.1:{port} (DATABASE_URL=postgresql://energy:***@"), line
    assert "Connection refused" in line and "set DATABASE_URL" in line
    assert PASSWORD not in done.stderr + done.stdout


def test_a_missing_variable_is_a_usage_line_and_debug_adds_the_trace() -> None:
    done = run(["migrate"], {})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "energy-pipeline migrate: error: invalid settings: DATABASE_URL is required (PostgreSQL "
        "DSN, `postgresql://user:***@host/db`); set them in the environment "
        "(`energy-pipeline migrate --help` lists them)"]
    url, _ = dead_database()
    for argv in (["--debug", "migrate"], ["migrate", "--debug"]):
        traced = run(argv, {"DATABASE_URL": url})
        lines = traced.stderr.splitlines()
        assert traced.returncode == 1 and lines[0] == "Traceback (most recent call last):"
        assert lines[-1].startswith("energy-pipeline migrate: error: cannot connect")
        assert PASSWORD not in traced.stderr


def test_topics_create_gives_up_on_an_unreachable_cluster_in_one_line() -> None:
    servers = f"127.0.0.1:{free_port()}"
    done = run(["topics", "create", "--timeout", "2"], {"KAFKA_BOOTSTRAP_SERVERS": servers})
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith(f"energy-pipeline topics create: error: no answer from Kafka at "
                           f"KAFKA_BOOTSTRAP_SERVERS={servers} within 2 s"), line
    assert line.endswith("start the brokers or set KAFKA_BOOTSTRAP_SERVERS to their host:port "
                         "list")


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        yield held.getsockname()[1]


@pytest.mark.parametrize(("command", "variable"), [
    ("ingest", "HTTP_PORT"), ("bridge", "HTTP_PORT"), ("api", "API_PORT"),
    ("inference", "GRPC_PORT")])
def test_a_taken_port_is_named_in_one_line(command: str, variable: str, taken_port: int,
                                           tmp_path: Path) -> None:
    dead = free_port()
    tokens = tmp_path / "api-tokens"  # the read API starts only with a client that may read
    tokens.write_text(entry("tests", "token") + "\n")
    env = {
        "DATABASE_URL": dead_database()[0], "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{dead}",
        "MQTT_PORT": str(dead), "HTTP_PORT": "0", variable: str(taken_port),
        "API_TOKENS_FILE": str(tokens),
        # Plaintext gRPC knowingly: the port is the question here, not inference's
        # certificates (without them it rightly refuses to start before it binds).
        "GRPC_TLS": "false",
    }
    done = run([command], env, timeout=60)
    assert done.returncode == 1, done.stdout[-2000:]
    assert done.stderr.splitlines() == [
        f"energy-pipeline {command}: error: {variable} {taken_port} is in use by another process; "
        f"set {variable} to a free port"]


def test_a_worker_facing_a_dead_kafka_logs_a_bounded_number_of_librdkafka_lines() -> None:
    """ingest with its Kafka and database gone, for 10 s: librdkafka retries every connection
    many times a second (a consumer logged about 20 lines a second before the throttle)."""
    dead = free_port()
    base = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}}
    env = {**base, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{dead}", "HTTP_PORT": "0",
           "DATABASE_URL": dead_database()[0]}
    process = subprocess.Popen(energy_pipeline_argv(["ingest"]), env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(10)
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    librdkafka = [entry["msg"] for entry in lines if entry["logger"] == "librdkafka"]
    assert librdkafka, "no librdkafka line at all: is the logger still set?"
    assert len(librdkafka) <= 12, f"{len(librdkafka)} lines, such as {librdkafka[:3]}"
    assert "|FAIL|" not in stderr and PASSWORD not in stdout + stderr


def seed(url: str, site: str, hours: int, seed: int) -> None:
    with psycopg2.connect(url) as conn:
        write_hourly_frame(conn, site, synthetic_building(hours, seed=seed))
    conn.close()


def test_train_exits_1_naming_the_sites_that_failed(database: str) -> None:
    seed(database, "site-a", 24 * 35, seed=1)
    seed(database, "site-b", 24 * 35, seed=2)
    # LightGBM refuses a tree of one leaf: every site's training fails.
    params = json.dumps({"num_leaves": 1, "num_boost_round": 5, "max_rows": 2000})
    done = run(["train"], {"DATABASE_URL": database, "TRAIN_BACKTEST_DAYS": "7",
                           "TRAIN_MODEL_PARAMS": params}, timeout=300)
    assert done.returncode == 1, done.stdout[-3000:]
    # LightGBM's C++ core writes its own "[LightGBM] [Fatal]" lines to stderr first.
    assert done.stderr.splitlines()[-1] == (
        "energy-pipeline train: error: training failed for 2 of 2 site(s): site-a, site-b; "
        'their "training failed" log lines on stdout hold each error')
    assert done.stderr.count("energy-pipeline train: error:") == 1
    failures = [json.loads(line) for line in done.stdout.splitlines()
                if line.startswith("{") and '"training failed"' in line]
    assert {entry["site_id"] for entry in failures} == {"site-a", "site-b"}


def test_the_mqtt_connect_check_names_the_broker(mqtt_broker: MosquittoBroker) -> None:
    port = free_port()
    with pytest.raises(CommandError) as caught:
        check_reachable("127.0.0.1", port, timeout=2)
    assert str(caught.value) == (
        f"cannot reach the MQTT broker at MQTT_HOST:MQTT_PORT 127.0.0.1:{port} (Connection "
        "refused); start the broker or set MQTT_HOST and MQTT_PORT to where it listens")
    check_reachable("127.0.0.1", mqtt_broker.port)  # a broker that is there: no error
