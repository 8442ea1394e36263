"""Energy-consumption forecasting: honest backtests and the models behind them.

Modules, one job each:
    frame      HourlyFrame: a gap-free hourly series and what is visible at an origin
    resample   sub-hourly or irregular readings to hourly means
    csvio      the user's CSV in, forecasts CSV out
    features   leakage-safe feature transforms (lags >= horizon, calendar, weather, rolling)
    models     default / seed / naive24 / naive168 behind one interface, text serialisation,
               feature importances; the one map from a model's name to its class
    kinds      the kinds a pipeline trains and serves (FORECAST_MODEL): names only
    split      the original report's 80/20 evaluation of windows, for any model
    quantiles  non-crossing P10/P50/P90, band widening
    backtest   rolling-origin backtest engine
    metrics    MAE, RMSE, rMAE, MASE, pinball, coverage
    rows       HourlyRow and the forecast of a window: plain data, no model library
    window     forecasts from hourly_features rows (what the inference service wraps)
    daily      the 7-day view (hourly forecasts summed per day)
    commands   `energy-pipeline backtest`
    plot       the optional picture of a backtest (matplotlib)
    hourly_db  hourly_features in and out (a site's closed hours, a feature window)
    registry   the `models` table: versions, importances, the promotion rule across kinds
    train      `energy-pipeline train`: backtest on the latest days, register, promote

The scheduler that calls inference from ingest is `dataplane.forecast_scheduler`; the
benchmarks and the synthetic building of the tests are in the harness (`energy_harness.bench`,
`energy_harness.synthetic`).
"""
