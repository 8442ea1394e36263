-- What the site's newest forecast was made without: inputs its model was trained with that
-- the request lacked (e.g. '{weather_forecast}' when no weather forecast had arrived), and
-- the origin of that forecast, so an older forecast caught up later does not overwrite it.
-- The operator reports it in the EnergyPipeline's status.
ALTER TABLE forecast_sites
    ADD COLUMN missing_inputs text[] NOT NULL DEFAULT '{}',
    ADD COLUMN inputs_origin  timestamptz;
