-- Readings, hourly features, forecasts, model registry, and the original report's view.

CREATE TABLE readings (
    site_id      text             NOT NULL,
    sensor       text             NOT NULL,
    device_id    text             NOT NULL,
    ts           timestamptz      NOT NULL,
    value        double precision NOT NULL,
    ingested_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, sensor, device_id, ts)
);
-- Readings arrive roughly in time order, so a BRIN index on ts stays tiny and serves
-- time-range scans (dashboards, retention) without slowing the ingest path.
CREATE INDEX readings_ts_brin ON readings USING brin (ts) WITH (pages_per_range = 32);

-- Kept current by ingest: per site and hour, a sum and a count per sensor type, added to
-- only for readings that were actually new, so redelivered readings never count twice.
CREATE TABLE hourly_features (
    site_id                text        NOT NULL,
    hour                   timestamptz NOT NULL,
    sum_temperature        double precision NOT NULL DEFAULT 0,
    n_temperature          bigint      NOT NULL DEFAULT 0,
    sum_humidity           double precision NOT NULL DEFAULT 0,
    n_humidity             bigint      NOT NULL DEFAULT 0,
    sum_squarefootage      double precision NOT NULL DEFAULT 0,
    n_squarefootage        bigint      NOT NULL DEFAULT 0,
    sum_renewableenergy    double precision NOT NULL DEFAULT 0,
    n_renewableenergy      bigint      NOT NULL DEFAULT 0,
    sum_energyconsumption  double precision NOT NULL DEFAULT 0,
    n_energyconsumption    bigint      NOT NULL DEFAULT 0,
    avg_temperature        double precision GENERATED ALWAYS AS (sum_temperature / NULLIF(n_temperature, 0)) STORED,
    avg_humidity           double precision GENERATED ALWAYS AS (sum_humidity / NULLIF(n_humidity, 0)) STORED,
    avg_squarefootage      double precision GENERATED ALWAYS AS (sum_squarefootage / NULLIF(n_squarefootage, 0)) STORED,
    avg_renewableenergy    double precision GENERATED ALWAYS AS (sum_renewableenergy / NULLIF(n_renewableenergy, 0)) STORED,
    avg_energyconsumption  double precision GENERATED ALWAYS AS (sum_energyconsumption / NULLIF(n_energyconsumption, 0)) STORED,
    n_readings             bigint GENERATED ALWAYS AS (
        n_temperature + n_humidity + n_squarefootage + n_renewableenergy + n_energyconsumption
    ) STORED,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, hour)
);
CREATE INDEX hourly_features_hour ON hourly_features (hour);

CREATE TABLE models (
    version           text        PRIMARY KEY,
    site_id           text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    trained_on_until  timestamptz,
    params            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    metrics           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    artifact          text        NOT NULL,
    promoted          boolean     NOT NULL DEFAULT false,
    promoted_at       timestamptz
);

CREATE TABLE forecasts (
    site_id        text             NOT NULL,
    issued_at      timestamptz      NOT NULL,
    target_time    timestamptz      NOT NULL,
    horizon        integer          NOT NULL CHECK (horizon BETWEEN 1 AND 168),
    model_version  text             NOT NULL,
    p10            double precision NOT NULL,
    p50            double precision NOT NULL,
    p90            double precision NOT NULL,
    created_at     timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, issued_at, target_time),
    CHECK (p10 <= p50 AND p50 <= p90)
);
CREATE INDEX forecasts_target ON forecasts (site_id, target_time);

-- The original report's table, one row per device and timestamp, with its exact columns.
CREATE VIEW distributeddata AS
SELECT
    ts AS "Timestamp",
    max(value) FILTER (WHERE sensor = 'temperature')       AS "Temperature",
    max(value) FILTER (WHERE sensor = 'humidity')          AS "Humidity",
    max(value) FILTER (WHERE sensor = 'squarefootage')     AS "SquareFootage",
    max(value) FILTER (WHERE sensor = 'renewableenergy')   AS "RenewableEnergy",
    max(value) FILTER (WHERE sensor = 'energyconsumption') AS "EnergyConsumption"
FROM readings
GROUP BY site_id, device_id, ts;

-- The report's model input: the 7 most recent hourly averages of every column, in time order.
-- p_site NULL averages over all sites, as the report's single-building table did.
CREATE FUNCTION recent_hourly_averages(p_site text DEFAULT NULL, p_hours integer DEFAULT 7)
RETURNS TABLE (
    hour timestamptz,
    avg_temperature double precision,
    avg_humidity double precision,
    avg_squarefootage double precision,
    avg_renewableenergy double precision,
    avg_energyconsumption double precision
)
LANGUAGE sql STABLE AS $$
    SELECT * FROM (
        SELECT
            f.hour,
            sum(f.sum_temperature) / NULLIF(sum(f.n_temperature), 0),
            sum(f.sum_humidity) / NULLIF(sum(f.n_humidity), 0),
            sum(f.sum_squarefootage) / NULLIF(sum(f.n_squarefootage), 0),
            sum(f.sum_renewableenergy) / NULLIF(sum(f.n_renewableenergy), 0),
            sum(f.sum_energyconsumption) / NULLIF(sum(f.n_energyconsumption), 0)
        FROM hourly_features f
        WHERE p_site IS NULL OR f.site_id = p_site
        GROUP BY f.hour
        ORDER BY f.hour DESC
        LIMIT p_hours
    ) latest
    ORDER BY hour;
$$;
