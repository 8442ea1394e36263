"""`energy-pipeline api`: serve the read API until SIGTERM, then drain and stop.

API_PORT serves /api/v1/... (plus health and metrics); HTTP_PORT serves only /healthz,
/readyz and /metrics, as on every worker, so probes and scrape configs are uniform. When
the two are equal, one listener serves everything. The data routes need a client's bearer
token from API_TOKENS_FILE; without a readable tokens file the API does not start, unless
API_AUTH=none says, knowingly, that anyone may read.
`energy-pipeline api-token` (api/token_command.py) makes the tokens file's entries.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal

from aiohttp import web

from energy_pipeline.api.app import ApiState, create_app, create_ops_app
from energy_pipeline.api.auth import Tokens, TokensFileError
from energy_pipeline.api.pool import ConnectionPool
from energy_pipeline.api.settings import ApiSettings
from energy_pipeline.core.errors import USAGE, CommandError, port_in_use
from energy_pipeline.core.logs import configure_logging
from energy_pipeline.core.settings import environment_help, load
from energy_pipeline.db.connect import worker_name

log = logging.getLogger("energy_pipeline.api")
HOST = "0.0.0.0"
# In-flight requests get this long to finish after SIGTERM (Kubernetes waits 30 s by
# default before SIGKILL); each is bounded by API_STATEMENT_TIMEOUT_MS anyway.
SHUTDOWN_TIMEOUT_S = 15.0


def load_tokens(settings: ApiSettings) -> Tokens | None:
    """The clients of API_TOKENS_FILE (None with API_AUTH=none); CommandError when unusable."""
    if settings.api_auth == "none":
        log.warning("API_AUTH=none: the read API serves every request without a token; "
                    "anyone who reaches API_PORT reads everything")
        return None
    try:
        tokens = Tokens(settings.api_tokens_file)
    except TokensFileError as exc:
        raise CommandError(
            f"API_TOKENS_FILE {exc}",
            fix=f"write a client into it with `energy-pipeline api-token <client> --file "
            f"{settings.api_tokens_file}`",
            status=USAGE,
        ) from exc
    log.info("tokens file read", extra={"path": settings.api_tokens_file,
                                        "clients": list(tokens.clients)})
    return tokens


async def serve(settings: ApiSettings, stop: asyncio.Event) -> None:
    tokens = load_tokens(settings)
    pool = ConnectionPool(
        settings.database_dsn(), settings.api_db_pool_size, settings.api_statement_timeout_ms,
        application_name=worker_name("api", settings.pipeline_name),
    )
    state = ApiState(settings, pool, tokens=tokens)
    state.probe.start()
    runners = [web.AppRunner(create_app(state), access_log=None,
                             shutdown_timeout=SHUTDOWN_TIMEOUT_S)]
    if settings.http_port != settings.api_port or settings.http_port == 0:
        runners.append(web.AppRunner(create_ops_app(state), access_log=None,
                                     shutdown_timeout=SHUTDOWN_TIMEOUT_S))
    try:
        ports = (("API_PORT", settings.api_port), ("HTTP_PORT", settings.http_port))
        for runner, (variable, port) in zip(runners, ports, strict=False):
            await runner.setup()
            try:
                await web.TCPSite(runner, HOST, port).start()
            except OSError as exc:
                raise port_in_use(variable, port, exc) from exc
        log.info("api listening", extra={
            "pid": os.getpid(),
            "api": [list(a)[:2] for a in runners[0].addresses],
            "ops": [list(a)[:2] for a in runners[-1].addresses],
            "pool_size": settings.api_db_pool_size,
            "statement_timeout_ms": settings.api_statement_timeout_ms,
            "auth": settings.api_auth,
            "rate_limit": settings.api_rate_limit,
            "rate_burst": settings.api_rate_burst,
        })
        await stop.wait()
        log.info("api stopping")
        # Requests still arriving during cleanup's grace period see 503 on /readyz. Routing
        # away before SIGTERM is the Deployment's job (a preStop sleep), not this process's.
        state.draining = True
    finally:
        for runner in runners:
            await runner.cleanup()
        await asyncio.to_thread(state.probe.stop)
        pool.close()
    log.info("api stopped")


def run(args: argparse.Namespace) -> int:
    settings = load(ApiSettings)
    configure_logging("api", settings.pipeline_name, settings.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "api",
        help="read API over HTTP: sites, readings, hourly features, forecasts",
        description=(
            "Serves the read API (/api/v1/sites, readings, hourly features and forecasts, "
            "JSON) from DATABASE_URL's database, read-only, on API_PORT; health and metrics "
            "on HTTP_PORT too (one listener when the two are equal). Runs until SIGTERM or "
            "Ctrl-C."
        ),
        epilog=environment_help(ApiSettings),
    )
    p.set_defaults(func=run)

