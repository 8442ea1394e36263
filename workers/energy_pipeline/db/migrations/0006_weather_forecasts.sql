-- Forecast weather per site (MQTT <root>/<site>/weather_forecast/<source>, through the
-- bridge to <prefix>.weather_forecast): every issue is kept with its issue time, so the model
-- at an origin, and a backtest replaying it, use exactly the forecast that was available
-- then: for each target hour, the newest issue made strictly before the origin.
--
-- Rows are written by ingest with ON CONFLICT DO NOTHING: a record replayed from Kafka (a
-- restart, a rebalance) changes nothing, and a source that re-sends an issue cannot rewrite
-- what was forecast.
CREATE TABLE weather_forecasts (
    site_id      text             NOT NULL,
    valid_time   timestamptz      NOT NULL,
    issued_at    timestamptz      NOT NULL,
    source       text             NOT NULL,
    temperature  double precision,
    humidity     double precision,
    received_at  timestamptz      NOT NULL DEFAULT now(),
    -- In this order for the question asked at each origin: per site and target hour, the
    -- newest issue before the origin.
    PRIMARY KEY (site_id, valid_time, issued_at, source)
);
