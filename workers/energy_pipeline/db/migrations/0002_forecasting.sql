-- Forecast scheduling state kept by ingest, and one promoted model per site.
--
-- Ingest owes a forecast for every hour of a site that closes. What is owed is persisted
-- (forecast_backlog) in the same transaction that decides the hour closed, so forecasts
-- are delayed, never lost, when the inference service is down or an ingest worker dies.

-- Per site and stream (sensor/device, i.e. one ordered Kafka key): the newest reading
-- timestamp ingest has committed. A site's watermark is the oldest of these among its
-- streams that are still advancing, so an hour closes only when every device's readings
-- for it are in, however far apart the ingest workers' partitions are.
CREATE TABLE forecast_watermarks (
    site_id      text        NOT NULL,
    stream       text        NOT NULL,
    -- The oldest reading seen with forecasting on: a new site owes forecasts from here,
    -- not for history that was in the database before.
    first_ts     timestamptz NOT NULL,
    max_ts       timestamptz NOT NULL,
    -- Wall-clock time max_ts last moved: a stream silent for long (a dead device) stops
    -- holding its site back.
    advanced_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, stream)
);

-- Per site: the watermark last evaluated, and the last hour whose forecast was put on the
-- backlog (hours after it are still open, or closed but not yet evaluated).
CREATE TABLE forecast_sites (
    site_id         text        PRIMARY KEY,
    watermark       timestamptz NOT NULL,
    closed_through  timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Forecasts owed: one row per (site, origin), origin = the hour after the closed hour.
-- Deleted in the transaction that stores the forecast.
CREATE TABLE forecast_backlog (
    site_id          text        NOT NULL,
    origin           timestamptz NOT NULL,
    enqueued_at      timestamptz NOT NULL DEFAULT now(),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    PRIMARY KEY (site_id, origin)
);
CREATE INDEX forecast_backlog_due ON forecast_backlog (next_attempt_at);

-- At most one promoted model per site (NULL site: a model for every site), so the
-- registry can never be ambiguous about what inference must serve.
CREATE UNIQUE INDEX models_one_promoted_per_site ON models ((coalesce(site_id, ''))) WHERE promoted;
CREATE INDEX models_site_created ON models (site_id, created_at DESC);
