"""Settings of `energy-pipeline api`, from the environment (names as in the README table)."""

from __future__ import annotations

from dataclasses import dataclass

from energy_pipeline.core.settings import (
    CommonSettings,
    SettingsError,
    env,
    http_port_field,
)
from energy_pipeline.db.connect import DatabaseSettings

# API_AUTH values: bearer tokens from API_TOKENS_FILE (the default), or none at all.
AUTH_MODES = ("bearer", "none")


@dataclass(frozen=True)
class PageSizes:
    default: int
    maximum: int


@dataclass(frozen=True, kw_only=True)
class ApiSettings(CommonSettings, DatabaseSettings):
    http_port: int = http_port_field(9104)
    api_port: int = env(
        "API_PORT", 8000,
        doc="port of the read API (`/api/v1/...`, also `/healthz`, `/readyz`, `/metrics`)",
        minimum=0,
    )
    api_max_page_size: int = env(
        "API_MAX_PAGE_SIZE", 10000, doc="largest `limit` a request may ask for (400 above)",
        minimum=1,
    )
    api_default_page_size: int = env(
        "API_DEFAULT_PAGE_SIZE", 1000, doc="rows per page when a request gives no `limit`",
        minimum=1,
    )
    api_statement_timeout_ms: int = env(
        "API_STATEMENT_TIMEOUT_MS", 5000,
        doc="longest a request may spend in the database; longer ones are cancelled (503)",
        minimum=1,
    )
    api_db_pool_size: int = env(
        "API_DB_POOL_SIZE", 4,
        doc="read-only database connections (and query threads) per API process",
        minimum=1,
    )

    api_auth: str = env(
        "API_AUTH", "bearer",
        doc="`bearer`: every data request needs `Authorization: Bearer <token>` of a client in "
        "API_TOKENS_FILE; `none`: anyone who reaches API_PORT reads everything (logged as a "
        "warning)",
    )
    api_tokens_file: str = env(
        "API_TOKENS_FILE", "",
        doc="file of the clients that may read, one `<name>:<sha256 hex of its token>` per "
        "line (`energy-pipeline api-token` writes them); re-read when it changes",
    )
    api_rate_limit: float = env(
        "API_RATE_LIMIT", 10.0,
        doc="requests per second each client may make on average (a token bucket per client; "
        "429 with Retry-After beyond it); 0: no limit",
        minimum=0,
    )
    api_rate_burst: int = env(
        "API_RATE_BURST", 20, doc="requests a client may make at once before API_RATE_LIMIT "
        "applies", minimum=1,
    )

    def __post_init__(self) -> None:
        errors = []
        if self.api_default_page_size > self.api_max_page_size:
            errors.append(
                f"API_DEFAULT_PAGE_SIZE ({self.api_default_page_size}) must not "
                f"exceed API_MAX_PAGE_SIZE ({self.api_max_page_size})"
            )
        if self.api_auth not in AUTH_MODES:
            errors.append(f"API_AUTH must be one of {', '.join(AUTH_MODES)}, "
                          f"got {self.api_auth!r}")
        elif self.api_auth == "bearer" and not self.api_tokens_file:
            errors.append(
                "API_TOKENS_FILE is required: the read API serves data only to clients with a "
                "token (make one with `energy-pipeline api-token <client> --file <path>`); "
                "API_AUTH=none serves everyone without one"
            )
        if errors:
            raise SettingsError("invalid settings: " + "; ".join(errors))

    @property
    def page_sizes(self) -> PageSizes:
        return PageSizes(self.api_default_page_size, self.api_max_page_size)
