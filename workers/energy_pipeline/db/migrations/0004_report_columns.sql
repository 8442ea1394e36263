-- The original report's table, spelled as the report's own SQL reads it.
--
-- The report created its table with unquoted names (Timestamp, Temperature, ...), which
-- PostgreSQL folds to lower case, and its queries read them unquoted
-- (date_trunc('hour', timestamp), AVG(temperature)). 0001 quoted the mixed-case names, so
-- those queries failed with `column "temperature" does not exist`. The columns are now the
-- folded names; a quoted mixed-case name ("Temperature") no longer resolves.
-- site_id and device_id keep every row's origin reachable; deviceid is the report's
-- integer DeviceId where our device id is a number (its combined records carry one).
DROP VIEW distributeddata;
CREATE VIEW distributeddata AS
SELECT
    ts AS timestamp,
    CASE WHEN device_id ~ '^[0-9]{1,9}$' THEN device_id::integer END AS deviceid,
    max(value) FILTER (WHERE sensor = 'temperature')       AS temperature,
    max(value) FILTER (WHERE sensor = 'humidity')          AS humidity,
    max(value) FILTER (WHERE sensor = 'squarefootage')     AS squarefootage,
    max(value) FILTER (WHERE sensor = 'renewableenergy')   AS renewableenergy,
    max(value) FILTER (WHERE sensor = 'energyconsumption') AS energyconsumption,
    site_id,
    device_id
FROM readings
GROUP BY site_id, device_id, ts;
