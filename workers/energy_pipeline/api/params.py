"""Request parameters into typed queries (pure), collecting every problem before answering.

A 400 names each bad parameter and says what would be accepted, so one round trip fixes
them all. Times relative to "now" are resolved once per request, and next links carry the
resolved absolute times, so a client paging through "the last 24 hours" sees one fixed
window, not one that slides between pages.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from energy_pipeline.api.paging import CursorError, decode_cursor, iso
from energy_pipeline.api.settings import PageSizes
from energy_pipeline.api.spec import FORMATS, ID_PATTERN, Param
from energy_pipeline.core.contracts import SENSOR_NAMES
from energy_pipeline.core.timeutil import parse_time

_ID = re.compile(ID_PATTERN)
_DIGITS = re.compile(r"^[0-9]{1,12}$")
READINGS_SPAN = timedelta(hours=24)
HOURLY_SPAN = timedelta(days=7)


class MultiQuery(Protocol):
    """What aiohttp's request.query (a MultiDictProxy) offers; a dict-of-lists stand-in works."""

    def getall(self, key: str, default: list[str] = ...) -> list[str]: ...

    def __iter__(self) -> Iterator[str]: ...


@dataclass(frozen=True)
class FieldError:
    parameter: str
    location: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"parameter": self.parameter, "in": self.location, "message": self.message}


class BadRequest(Exception):
    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__(self.detail)

    @property
    def detail(self) -> str:
        return "; ".join(f"{e.parameter}: {e.message}" for e in self.errors)


class QueryReader:
    """The query string of one request, read against the parameters its route documents."""

    def __init__(self, query: MultiQuery, params: Sequence[Param]) -> None:
        self.query = query
        self.params = {p.name: p for p in params}
        self.errors: list[FieldError] = []
        names = list(dict.fromkeys(str(k) for k in query))
        for name in names:
            param = self.params.get(name)
            if param is None:
                known = ", ".join(sorted(self.params)) or "none"
                self.error(name, f"unknown parameter; this endpoint accepts: {known}")
            elif not param.is_list and len(query.getall(name, [])) > 1:
                self.error(name, "given more than once")

    def error(self, name: str, message: str, location: str = "query") -> None:
        self.errors.append(FieldError(name, location, message))

    def failed(self, name: str) -> bool:
        return any(e.parameter == name for e in self.errors)

    def one(self, name: str) -> str | None:
        values = self.query.getall(name, [])
        return values[0] if values and not self.failed(name) else None

    def many(self, name: str) -> list[str] | None:
        values = self.query.getall(name, [])
        if not values:
            return None
        items = [part.strip() for value in values for part in value.split(",")]
        if any(not item for item in items):
            self.error(name, "empty item in the list (expected a,b,c)")
            return None
        return list(dict.fromkeys(items))

    def raise_if_errors(self) -> None:
        if self.errors:
            raise BadRequest(self.errors)


@dataclass(frozen=True)
class Common:
    limit: int
    format: str | None
    # The parameters as given, minus cursor and times: carried into next links.
    echo: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True)
class SitesQuery:
    common: Common
    after: str | None


@dataclass(frozen=True)
class ReadingsQuery:
    site: str
    sensors: tuple[str, ...]
    devices: tuple[str, ...] | None
    start: datetime
    end: datetime
    common: Common
    after: tuple[str, str, datetime] | None


@dataclass(frozen=True)
class HourlyQuery:
    site: str
    start: datetime
    end: datetime
    common: Common
    after: datetime | None


@dataclass(frozen=True)
class ForecastsQuery:
    site: str
    # None: the latest run; else the latest run issued at or before this time.
    issued_by: datetime | None
    start: datetime | None
    end: datetime | None
    common: Common
    after: datetime | None


@dataclass(frozen=True)
class ModelsQuery:
    site: str
    # None: every version; True: only the promoted one; False: only the others.
    promoted: bool | None
    common: Common
    after: tuple[datetime, str] | None  # (created_at, version) of the previous page's last


def check_site(site: str) -> bool:
    return bool(_ID.fullmatch(site))


def _time(reader: QueryReader, name: str, now: datetime) -> datetime | None:
    raw = reader.one(name)
    if raw is None:
        return None
    try:
        return parse_time(raw, now)
    except (ValueError, OverflowError):
        reader.error(name, f"{raw[:80]!r} is not a time: use ISO 8601 such as "
                           "2025-01-01T00:00:00Z, or now, now-7d, now+1h")
        return None


def _window(
    reader: QueryReader, now: datetime, span: timedelta
) -> tuple[datetime, datetime] | None:
    start, end = _time(reader, "from", now), _time(reader, "to", now)
    if reader.failed("from") or reader.failed("to"):
        return None
    end = end or now
    if start is None:
        try:
            start = end - span
        except OverflowError:
            reader.error("to", f"too early to look back {span} from")
            return None
    if start > end:
        reader.error("from", f"from ({iso(start)}) is after to ({iso(end)})")
        return None
    return start, end


def _common(reader: QueryReader, pages: PageSizes) -> Common:
    limit = pages.default
    raw = reader.one("limit")
    if raw is not None:
        if _DIGITS.match(raw) and 1 <= int(raw) <= pages.maximum:
            limit = int(raw)
        else:
            reader.error("limit", f"must be an integer from 1 to {pages.maximum}, got {raw[:80]!r}")
    fmt = reader.one("format")
    if fmt is not None and fmt not in FORMATS:
        reader.error("format", f"must be one of {', '.join(FORMATS)}, got {fmt[:80]!r}")
        fmt = None
    echo = tuple(
        (name, value)
        for name in ("limit", "format")
        if (value := reader.one(name)) is not None and not reader.failed(name)
    )
    return Common(limit, fmt, echo)


def _cursor(reader: QueryReader, kind: str) -> tuple[object, ...] | None:
    raw = reader.one("cursor")
    if raw is None:
        return None
    try:
        return decode_cursor(kind, raw)
    except CursorError as exc:
        reader.error("cursor", str(exc))
        return None


def parse_sites(query: MultiQuery, params: Sequence[Param], pages: PageSizes) -> SitesQuery:
    reader = QueryReader(query, params)
    common = _common(reader, pages)
    key = _cursor(reader, "sites")
    if key is not None and not _ID.fullmatch(str(key[0])):
        reader.error("cursor", "not a cursor of the sites endpoint")
    reader.raise_if_errors()
    return SitesQuery(common, str(key[0]) if key else None)


def parse_readings(
    site: str, query: MultiQuery, params: Sequence[Param], pages: PageSizes, now: datetime
) -> ReadingsQuery:
    reader = QueryReader(query, params)
    sensors = reader.many("sensor")
    if sensors is not None:
        unknown = [s for s in sensors if s not in SENSOR_NAMES]
        if unknown:
            reader.error("sensor", f"unknown sensor {', '.join(repr(s[:80]) for s in unknown)}; "
                                   f"known: {', '.join(SENSOR_NAMES)}")
    devices = reader.many("device")
    if devices is not None:
        bad = [d for d in devices if not _ID.fullmatch(d)]
        if bad:
            reader.error("device", f"device ids match {ID_PATTERN}, got "
                                   f"{', '.join(repr(d[:80]) for d in bad)}")
    window = _window(reader, now, READINGS_SPAN)
    common = _common(reader, pages)
    key = _cursor(reader, "readings")
    if key is not None and (key[0] not in SENSOR_NAMES or not _ID.fullmatch(str(key[1]))):
        reader.error("cursor", "not a cursor of the readings endpoint")
    elif key is not None and devices is not None and key[1] not in devices:
        reader.error("cursor", "belongs to a query with other devices (follow `next` as given)")
    reader.raise_if_errors()
    assert window is not None
    # Sensor types are visited in contract order, the same on every page.
    chosen = tuple(s for s in SENSOR_NAMES if sensors is None or s in sensors)
    echo = list(common.echo)
    if sensors is not None:
        echo.append(("sensor", ",".join(chosen)))
    if devices is not None:
        echo.append(("device", ",".join(devices)))
    after = (str(key[0]), str(key[1]), key[2]) if key else None
    return ReadingsQuery(
        site, chosen, tuple(devices) if devices is not None else None, *window,
        Common(common.limit, common.format, tuple(echo)), after,  # type: ignore[arg-type]
    )


def parse_hourly(
    site: str, query: MultiQuery, params: Sequence[Param], pages: PageSizes, now: datetime
) -> HourlyQuery:
    reader = QueryReader(query, params)
    window = _window(reader, now, HOURLY_SPAN)
    common = _common(reader, pages)
    key = _cursor(reader, "hourly")
    reader.raise_if_errors()
    assert window is not None
    return HourlyQuery(site, *window, common, key[0] if key else None)  # type: ignore[arg-type]


def parse_forecasts(
    site: str, query: MultiQuery, params: Sequence[Param], pages: PageSizes, now: datetime
) -> ForecastsQuery:
    reader = QueryReader(query, params)
    issued_by: datetime | None = None
    raw = reader.one("issued")
    if raw is not None and raw != "latest":
        try:
            issued_by = parse_time(raw, now)
        except (ValueError, OverflowError):
            reader.error("issued", f"{raw[:80]!r} is neither latest nor a time: use latest, "
                                   "ISO 8601 such as 2025-01-01T00:00:00Z, or now-1d")
    start, end = _time(reader, "from", now), _time(reader, "to", now)
    if start is not None and end is not None and start > end:
        reader.error("from", f"from ({iso(start)}) is after to ({iso(end)})")
    common = _common(reader, pages)
    key = _cursor(reader, "forecasts")
    reader.raise_if_errors()
    return ForecastsQuery(site, issued_by, start, end, common,
                          key[0] if key else None)  # type: ignore[arg-type]


def parse_models(
    site: str, query: MultiQuery, params: Sequence[Param], pages: PageSizes
) -> ModelsQuery:
    reader = QueryReader(query, params)
    promoted: bool | None = None
    raw = reader.one("promoted")
    if raw is not None:
        if raw in ("true", "false"):
            promoted = raw == "true"
        else:
            reader.error("promoted", f"must be true or false, got {raw[:80]!r}")
    common = _common(reader, pages)
    key = _cursor(reader, "models")
    reader.raise_if_errors()
    echo = list(common.echo)
    if promoted is not None:
        echo.append(("promoted", "true" if promoted else "false"))
    after = (key[0], str(key[1])) if key else None
    return ModelsQuery(site, promoted, Common(common.limit, common.format, tuple(echo)),
                       after)  # type: ignore[arg-type]


def query_from_mapping(values: Mapping[str, Sequence[str]]) -> MultiQuery:
    """A MultiQuery from {name: [values]}, for callers without an aiohttp request."""

    class _Query:
        def getall(self, key: str, default: list[str] | None = None) -> list[str]:
            return list(values.get(key, default or []))

        def __iter__(self) -> Iterator[str]:
            return iter(values)

    return _Query()
