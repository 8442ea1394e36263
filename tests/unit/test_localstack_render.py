"""Pure parts of the local stack: configuration rendering, ids, ports, failure messages."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest
from energy_harness.localstack.install import SystemDependency, missing_system_dependencies
from energy_harness.localstack.kafka import (
    KafkaNodeSpec,
    KafkaSecurity,
    new_cluster_id,
    render_server_properties,
    role_acls,
)
from energy_harness.localstack.mqtt import render_mosquitto_conf
from energy_harness.localstack.postgres import dsn, render_server_args
from energy_harness.localstack.process import ManagedProcess, ServiceError, free_port, wait_until
from energy_pipeline.core.logs import JsonFormatter

pytestmark = pytest.mark.unit


def parse_properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def cluster_specs(size: int) -> list[KafkaNodeSpec]:
    return [KafkaNodeSpec(i, 9000 + i, 9100 + i, Path(f"/data/{i}")) for i in range(1, size + 1)]


def test_kafka_properties_describe_a_static_kraft_quorum() -> None:
    specs = cluster_specs(3)
    props = parse_properties(render_server_properties(specs[1], specs))
    assert props["node.id"] == "2"
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9002,CONTROLLER://127.0.0.1:9102"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9002"
    assert props["log.dirs"] == "/data/2"


def test_kafka_internal_topics_survive_one_node_and_match_product_defaults() -> None:
    specs = cluster_specs(3)
    props = parse_properties(render_server_properties(specs[0], specs))
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["num.partitions"] == "4"
    assert props["default.replication.factor"] == "2"
    assert props["min.insync.replicas"] == "2"
    assert props["auto.create.topics.enable"] == "false"


def test_single_node_kafka_lowers_replication_to_what_exists() -> None:
    specs = cluster_specs(1)
    props = parse_properties(render_server_properties(specs[0], specs))
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["default.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"


def test_kafka_overrides_win() -> None:
    specs = cluster_specs(3)
    props = parse_properties(
        render_server_properties(specs[0], specs, {"num.partitions": "8", "x.y": "z"})
    )
    assert props["num.partitions"] == "8"
    assert props["x.y"] == "z"


def test_secured_kafka_puts_clients_on_sasl_ssl_and_nodes_on_mutual_tls() -> None:
    specs = [KafkaNodeSpec(i, 9000 + i, 9100 + i, Path(f"/data/{i}"), 9200 + i)
             for i in (1, 2, 3)]
    security = KafkaSecurity(Path("/auth"))
    props = parse_properties(render_server_properties(specs[0], specs, security=security))
    assert props["listeners"] == (
        "CLIENT://127.0.0.1:9001,INTERNAL://127.0.0.1:9201,CONTROLLER://127.0.0.1:9101")
    assert props["advertised.listeners"] == "CLIENT://127.0.0.1:9001,INTERNAL://127.0.0.1:9201"
    assert props["listener.security.protocol.map"] == (
        "CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL")
    assert props["inter.broker.listener.name"] == "INTERNAL"
    assert props["listener.name.client.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["listener.name.internal.ssl.client.auth"] == "required"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer")
    assert props["super.users"] == "User:kafka-broker"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103"


def test_each_role_gets_only_what_its_code_does() -> None:
    rules = {(a.principal, a.resource, a.name, a.operation) for a in role_acls("energy", "ingest")}
    sensors = ("temperature", "humidity", "squarefootage", "renewableenergy", "energyconsumption")
    readings = [*(f"energy.{s}" for s in sensors), "energy.weather_forecast"]
    everything = [*readings, "energy.deadletter"]
    assert {r for r in rules if r[0] == "bridge"} == {
        ("bridge", "topic", t, op) for t in everything for op in ("WRITE", "DESCRIBE")}
    assert {r for r in rules if r[0] == "ingest"} == {
        *(("ingest", "topic", t, op) for t in readings for op in ("READ", "DESCRIBE")),
        ("ingest", "topic", "energy.deadletter", "WRITE"),
        ("ingest", "topic", "energy.deadletter", "DESCRIBE"),
        ("ingest", "group", "ingest", "READ"),
        ("ingest", "group", "ingest", "DESCRIBE"),
    }
    assert {r for r in rules if r[0] == "operator"} == {
        ("operator", "topic", t, op) for t in everything
        for op in ("CREATE", "DESCRIBE", "ALTER", "DELETE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS")}


def test_cluster_ids_are_kafka_uuids() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_mosquitto_conf_persists_sessions_and_binds_loopback(tmp_path: Path) -> None:
    conf = render_mosquitto_conf(1883, tmp_path, run_as_root=False)
    lines = conf.splitlines()
    assert "listener 1883 127.0.0.1" in lines
    assert "persistence true" in lines
    assert f"persistence_location {tmp_path}/" in lines
    assert "user root" not in lines
    assert "user root" in render_mosquitto_conf(1883, tmp_path, run_as_root=True).splitlines()


def test_postgres_args_and_dsn() -> None:
    args = render_server_args(Path("/d"), 5433, Path("/s"), {"fsync": "off"})
    assert args[:6] == ["-D", "/d", "-p", "5433", "-k", "/s"]
    assert "listen_addresses=127.0.0.1" in args
    assert "fsync=off" in args
    assert dsn(5433, "p@ss/word", "energy") == "postgresql://postgres:p%40ss%2Fword@127.0.0.1:5433/energy"


def test_free_ports_are_never_repeated() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50


def test_a_process_that_dies_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    proc = ManagedProcess(
        name="doomed",
        argv=["sh", "-c", "echo 'fatal: port already in use' >&2; exit 3"],
        log_path=tmp_path / "doomed.log",
    )
    proc.start()
    with pytest.raises(ServiceError) as info:
        wait_until(lambda: False, timeout=10, what="waiting for nothing", process=proc)
    message = str(info.value)
    assert "doomed: exited with code 3" in message
    assert str(tmp_path / "doomed.log") in message
    assert "fatal: port already in use" in message


def test_a_missing_executable_is_named(tmp_path: Path) -> None:
    proc = ManagedProcess(name="ghost", argv=["/nonexistent/ghostd"], log_path=tmp_path / "g.log")
    with pytest.raises(ServiceError, match="ghost: executable not found: /nonexistent/ghostd"):
        proc.start()


def test_a_process_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    proc = ManagedProcess(
        name="stubborn",
        argv=["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"],
        log_path=tmp_path / "s.log",
    )
    proc.start()
    proc.stop(timeout=1)
    assert not proc.alive()


def test_missing_system_dependencies_names_the_package() -> None:
    missing = missing_system_dependencies((SystemDependency("no-such-program-xyz", "xyz-pkg"),))
    assert [(d.name, d.debian_package) for d in missing] == [("no-such-program-xyz", "xyz-pkg")]


def test_json_log_lines_carry_pipeline_and_extra_fields() -> None:
    record = logging.LogRecord("w", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    record.rows = 5
    entry = json.loads(JsonFormatter(pipeline="p1", component="ingest").format(record))
    assert entry["msg"] == "hello x"
    assert entry["pipeline"] == "p1"
    assert entry["component"] == "ingest"
    assert entry["rows"] == 5
    assert entry["level"] == "info"
