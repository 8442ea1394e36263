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

    def __post_init__(self) -> None:
        if self.api_default_page_size > self.api_max_page_size:
            raise SettingsError(
                f"invalid settings: API_DEFAULT_PAGE_SIZE ({self.api_default_page_size}) must not "
                f"exceed API_MAX_PAGE_SIZE ({self.api_max_page_size})"
            )

    @property
    def page_sizes(self) -> PageSizes:
        return PageSizes(self.api_default_page_size, self.api_max_page_size)
