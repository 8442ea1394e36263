"""The read API (`energy-pipeline api`): sites, readings, hourly features, forecasts and models.

The original report's Flask GET API, done properly: JSON and CSV, keyset pagination,
validation that names the bad parameter, an OpenAPI 3.1 document generated from the same
route table that validates requests, health, readiness and Prometheus metrics.

Layout: `spec` (routes, parameters, columns; OpenAPI), `params` (query parsing, pure),
`paging` (cursors and next links, pure), `render` (content negotiation, JSON/CSV, pure),
`queries` (SQL run on one connection), `pool` (read-only connections), `app` (aiohttp
handlers), `server` (the command).
"""
