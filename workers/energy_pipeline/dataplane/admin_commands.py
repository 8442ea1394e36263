"""`energy-pipeline migrate` and `energy-pipeline topics`: what the operator does, by hand."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient

from energy_pipeline.core.contracts import all_kafka_topics
from energy_pipeline.core.kafka import check_reachable
from energy_pipeline.core.settings import (
    CommonSettings,
    KafkaSettings,
    env,
    environment_help,
    load,
)
from energy_pipeline.dataplane.topics import TopicSpec, create_topic
from energy_pipeline.db.connect import DatabaseSettings
from energy_pipeline.db.migrate import migrate

log = logging.getLogger("energy_pipeline.admin")


@dataclass(frozen=True, kw_only=True)
class MigrateSettings(CommonSettings, DatabaseSettings):
    """DATABASE_URL and DATABASE_CA_FILE (DatabaseSettings), nothing else."""


@dataclass(frozen=True, kw_only=True)
class TopicSettings(CommonSettings, KafkaSettings):
    kafka_partitions: int = env("KAFKA_PARTITIONS", 4, doc="partitions per topic", minimum=1)
    kafka_replication_factor: int = env(
        "KAFKA_REPLICATION_FACTOR", 2, doc="replicas per partition", minimum=1
    )


def _migrate(args: argparse.Namespace) -> int:
    settings = load(MigrateSettings)
    version = migrate(settings.database_dsn())
    print(json.dumps({"schema_version": version}))
    return 0


def topic_specs(settings: TopicSettings) -> list[TopicSpec]:
    return [
        TopicSpec(name, settings.kafka_partitions, settings.kafka_replication_factor)
        for name in all_kafka_topics(settings.kafka_topic_prefix)
    ]


def _topics_create(args: argparse.Namespace) -> int:
    settings = load(TopicSettings)
    config = settings.kafka_client_config()
    admin = AdminClient(config)
    check_reachable(admin, config, timeout_s=args.timeout)
    created = {spec.name: create_topic(admin, spec) for spec in topic_specs(settings)}
    print(
        json.dumps(
            {
                "created": [n for n, c in created.items() if c],
                "existing": [n for n, c in created.items() if not c],
            }
        )
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "migrate",
        help="apply pending database migrations (DATABASE_URL)",
        description="Applies the versioned SQL migrations that DATABASE_URL's database lacks, "
        "under an advisory lock (several at once are safe), after checking the checksums of "
        "those already applied. Prints {\"schema_version\": N}.",
        epilog=environment_help(MigrateSettings),
    )
    p.set_defaults(func=_migrate)
    topics = commands.add_parser(
        "topics", help="Kafka topics of a pipeline",
        description="Kafka topics of a pipeline: `topics create`.",
    )
    sub = topics.add_subparsers(dest="topics_command", required=True)
    create = sub.add_parser(
        "create",
        help="create the sensor and dead-letter topics if absent",
        description="Creates <prefix>.<sensor> for the five sensors, <prefix>.weather_forecast "
        "and <prefix>.deadletter with KAFKA_PARTITIONS partitions and KAFKA_REPLICATION_FACTOR "
        "replicas, unless they exist. Prints the names created and those that existed.",
        epilog=environment_help(TopicSettings),
    )
    create.add_argument(
        "--timeout", type=float, default=10.0,
        help="seconds to wait for the cluster to answer before giving up",
    )
    create.set_defaults(func=_topics_create)
