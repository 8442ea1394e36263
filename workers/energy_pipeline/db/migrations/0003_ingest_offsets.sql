-- Where the database stands in Kafka, and what Kafka lost before it was stored.

-- Per consumer group and partition: one past the last offset whose records are in this
-- database, written in the transaction of each batch. Ingest starts a partition from here
-- when it is behind Kafka's committed offset (a database restored from a backup, or a
-- failover that lost the newest commits), so Kafka replays exactly what the database lacks.
CREATE TABLE ingest_offsets (
    consumer_group  text        NOT NULL,
    topic           text        NOT NULL,
    partition       integer     NOT NULL,
    next_offset     bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Kafka records that were deleted (retention) before ingest stored them: each row is one run
-- of missing offsets of one partition, found by ingest from the offsets it consumed, and
-- written in the transaction of the batch that revealed it. Nothing here can bring the
-- readings back (a restore from backup or a replay from the sensors can); it says exactly
-- what is missing, so a loss is never silent.
CREATE TABLE ingest_lost_records (
    consumer_group  text        NOT NULL,
    topic           text        NOT NULL,
    partition       integer     NOT NULL,
    first_offset    bigint      NOT NULL,
    last_offset     bigint      NOT NULL,
    records         bigint      NOT NULL,
    detected_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition, first_offset)
);
