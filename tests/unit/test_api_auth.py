"""The read API's bearer tokens and per-client rate limit: the tokens file (parsing, rotation
by editing it), the token bucket with an injected clock, the CLI that makes entries, and the
app's 401/429 answers (aiohttp's test server; no database is reached before them)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from energy_pipeline import cli
from energy_pipeline.api import metrics
from energy_pipeline.api.app import ApiState, create_app
from energy_pipeline.api.auth import (
    RateLimiter,
    Refusal,
    Tokens,
    TokensFileError,
    add_client,
    bearer_token,
    entry,
    hash_token,
    parse_tokens,
    retry_after,
)
from energy_pipeline.api.pool import ConnectionPool
from energy_pipeline.api.settings import ApiSettings
from energy_pipeline.core.settings import SettingsError, load

pytestmark = pytest.mark.unit

DEAD_DB = "postgresql://nobody@127.0.0.1:1/none"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sample(counter: Any, *labels: str) -> float:
    return float(counter.labels(*labels)._value.get() if labels else counter._value.get())


# ---- the tokens file ------------------------------------------------------------------------


def test_an_entry_is_the_client_and_the_sha256_of_its_token() -> None:
    assert entry("grafana", "s3cret") == "grafana:" + hashlib.sha256(b"s3cret").hexdigest()
    assert hash_token("s3cret") == hashlib.sha256(b"s3cret").hexdigest()
    with pytest.raises(TokensFileError, match="client name 'a b' must match"):
        entry("a b", "t")


def test_parse_reads_clients_and_skips_comments_and_blank_lines() -> None:
    text = f"# who may read\n\n{entry('a', 'ta')}\n  {entry('b.c-1', 'tb')}  \n"
    assert parse_tokens(text, "f") == {
        "a": hashlib.sha256(b"ta").digest(), "b.c-1": hashlib.sha256(b"tb").digest()}


def test_parse_reports_every_bad_line_at_once_without_echoing_it() -> None:
    text = "\n".join([entry("a", "t"), "a-plain-token-pasted-here", entry("a", "u"),
                      "b:" + "A" * 64, "c:" + "0" * 63])
    with pytest.raises(TokensFileError) as caught:
        parse_tokens(text, "/run/tokens")
    assert str(caught.value) == (
        "/run/tokens: line 2 is not <client>:<64 lowercase hex digits of sha256>; "
        "line 3: client 'a' appears twice; "
        "line 4 is not <client>:<64 lowercase hex digits of sha256>; "
        "line 5 is not <client>:<64 lowercase hex digits of sha256>")
    assert "pasted" not in str(caught.value)


def test_a_file_without_clients_is_refused() -> None:
    with pytest.raises(TokensFileError, match=r"^f: no client in it$"):
        parse_tokens("# nobody yet\n", "f")


def test_tokens_identify_clients_by_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{entry('a', 'token-a')}\n{entry('b', 'token-b')}\n")
    tokens = Tokens(str(path))
    assert tokens.clients == ("a", "b")
    assert (tokens.identify("token-a"), tokens.identify("token-b")) == ("a", "b")
    assert tokens.identify("token-c") is None
    assert tokens.identify("") is None
    assert tokens.identify(hash_token("token-a")) is None  # the stored hash is not a token


def test_a_changed_file_is_read_again_once_the_check_interval_passed(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(entry("a", "old") + "\n")
    clock = Clock()
    tokens = Tokens(str(path), clock=clock, check_every=1.0)
    reloads = sample(metrics.TOKEN_RELOADS, "ok")

    add_client(str(path), "a", "new")  # rotation: a's token replaced
    clock.now += 0.5
    assert tokens.identify("old") == "a"  # not looked at yet
    clock.now += 0.5
    assert (tokens.identify("old"), tokens.identify("new")) == (None, "a")
    assert sample(metrics.TOKEN_RELOADS, "ok") == reloads + 1
    assert sample(metrics.CLIENTS) == 1

    clock.now += 5  # unchanged file: not read again
    assert tokens.identify("new") == "a"
    assert sample(metrics.TOKEN_RELOADS, "ok") == reloads + 1


def test_a_bad_edit_keeps_the_last_good_clients_and_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(entry("a", "ta") + "\n")
    clock = Clock()
    tokens = Tokens(str(path), clock=clock)
    errors = sample(metrics.TOKEN_RELOADS, "error")
    path.write_text("not a line\n")
    clock.now += 2
    assert tokens.identify("ta") == "a"
    path.unlink()
    clock.now += 2
    assert tokens.identify("ta") == "a"
    assert sample(metrics.TOKEN_RELOADS, "error") == errors + 2
    path.write_text(entry("b", "tb") + "\n")
    clock.now += 2
    assert (tokens.identify("ta"), tokens.identify("tb")) == (None, "b")


def test_a_missing_or_bad_file_refuses_the_start(tmp_path: Path) -> None:
    with pytest.raises(TokensFileError, match=r"/nowhere/tokens: No such file or directory$"):
        Tokens("/nowhere/tokens")
    (tmp_path / "t").write_text("x\n")
    with pytest.raises(TokensFileError, match="line 1 is not"):
        Tokens(str(tmp_path / "t"))


def test_add_client_creates_a_private_file_and_replaces_only_that_client(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    assert add_client(str(path), "a", "ta") is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert add_client(str(path), "b", "tb") is True
    assert add_client(str(path), "a", "ta2") is False
    assert path.read_text() == f"{entry('b', 'tb')}\n{entry('a', 'ta2')}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["tokens"]  # no scratch file left


# ---- the Authorization header ---------------------------------------------------------------


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, Refusal("missing", "this endpoint needs an Authorization: Bearer <token> header")),
    ({"Authorization": "Basic dXNlcjpwdw=="},
     Refusal("malformed", "the Authorization header must be Bearer <token>")),
    ({"Authorization": "Bearer"}, Refusal("malformed",
                                          "the Authorization header must be Bearer <token>")),
    ({"Authorization": "Bearer a b"},
     Refusal("malformed", "the Authorization header must be Bearer <token>")),
    ({"Authorization": "Bearer abc"}, "abc"),
    ({"Authorization": "bearer  abc "}, "abc"),
])
def test_bearer_token(headers: dict[str, str], expected: str | Refusal) -> None:
    assert bearer_token(headers) == expected


def test_challenges_follow_rfc_6750() -> None:
    assert Refusal("missing", "").challenge == 'Bearer realm="energy-pipeline"'
    assert Refusal("unknown", "").challenge == (
        'Bearer realm="energy-pipeline", error="invalid_token"')


# ---- the token bucket -----------------------------------------------------------------------


def test_a_client_may_burst_then_goes_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == 0.5  # one token in 1/2 s
    clock.now += 0.25
    assert limiter.take("a") == 0.25
    clock.now += 0.25
    assert limiter.take("a") == 0.0
    assert limiter.take("a") == 0.5
    clock.now += 100  # refills up to the burst, no further
    assert [limiter.take("a") for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]


def test_clients_have_buckets_of_their_own() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    assert (limiter.take("a"), limiter.take("a"), limiter.take("b")) == (0.0, 1.0, 0.0)


def test_rate_zero_means_no_limit() -> None:
    limiter = RateLimiter(rate=0.0, burst=1, clock=Clock())
    assert all(limiter.take("a") == 0.0 for _ in range(1000))


@pytest.mark.parametrize(("wait", "header"), [(0.001, "1"), (1.0, "1"), (1.01, "2"), (30, "30")])
def test_retry_after_is_whole_seconds_rounded_up(wait: float, header: str) -> None:
    assert retry_after(wait) == header


# ---- settings and the command line ----------------------------------------------------------


def test_settings_want_a_tokens_file_unless_auth_is_off() -> None:
    with pytest.raises(SettingsError, match=(
            r"^invalid settings: API_TOKENS_FILE is required: the read API serves data only "
            r"to clients with a token \(make one with `energy-pipeline api-token <client> "
            r"--file <path>`\); API_AUTH=none serves everyone without one$")):
        load(ApiSettings, {"DATABASE_URL": "x"})
    with pytest.raises(SettingsError, match="API_AUTH must be one of bearer, none, got 'off'"):
        load(ApiSettings, {"DATABASE_URL": "x", "API_AUTH": "off"})
    s = load(ApiSettings, {"DATABASE_URL": "x", "API_AUTH": "none"})
    assert (s.api_auth, s.api_tokens_file, s.api_rate_limit, s.api_rate_burst) == (
        "none", "", 10.0, 20)
    s = load(ApiSettings, {"DATABASE_URL": "x", "API_TOKENS_FILE": "/t",
                           "API_RATE_LIMIT": "0.5", "API_RATE_BURST": "3"})
    assert (s.api_auth, s.api_tokens_file, s.api_rate_limit, s.api_rate_burst) == (
        "bearer", "/t", 0.5, 3)


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("API_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATABASE_URL", DEAD_DB)
    monkeypatch.setenv("HTTP_PORT", "0")
    monkeypatch.setenv("API_PORT", "0")
    yield


def test_the_api_does_not_start_without_its_tokens_file(
        environ: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    assert cli.main(["api"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("energy-pipeline api: error: invalid settings: API_TOKENS_FILE is "
                           "required"), line
    monkeypatch.setenv("API_TOKENS_FILE", str(tmp_path / "absent"))
    assert cli.main(["api"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"energy-pipeline api: error: API_TOKENS_FILE {tmp_path}/absent: No such file or "
        f"directory; write a client into it with `energy-pipeline api-token <client> --file "
        f"{tmp_path}/absent`"]


def test_api_token_writes_the_entry_and_prints_the_token_once(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tokens"
    assert cli.main(["api-token", "grafana", "--file", str(path)]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert len(token) >= 43 and out == token + "\n"
    assert err == f"added client grafana in {path}\n"
    assert path.read_text() == entry("grafana", token) + "\n"
    assert Tokens(str(path)).identify(token) == "grafana"

    import io
    monkeypatch.setattr("sys.stdin", io.StringIO("my-own-token\n"))
    assert cli.main(["api-token", "ci", "--stdin"]) == 0
    assert capsys.readouterr().out == entry("ci", "my-own-token") + "\n"

    assert cli.main(["api-token", "ci"]) == 2
    assert "give --file <tokens file>" in capsys.readouterr().err
    assert cli.main(["api-token", "no good", "--file", str(path)]) == 2
    assert "client name 'no good' must match" in capsys.readouterr().err


# ---- the app: 401 and 429 before any database work ------------------------------------------


def settings(tokens_file: str, **extra: Any) -> ApiSettings:
    return ApiSettings(database_url=DEAD_DB, api_tokens_file=tokens_file, **extra)


async def _exchange(state: ApiState, requests: list[tuple[str, dict[str, str]]]
                    ) -> list[tuple[int, dict[str, str], Any]]:
    client = TestClient(TestServer(create_app(state)))
    await client.start_server()
    try:
        out = []
        for path, headers in requests:
            response = await client.get(path, headers=headers)
            body = await response.read()
            out.append((response.status, dict(response.headers),
                        json.loads(body) if body.startswith(b"{") else body))
        return out
    finally:
        await client.close()


@pytest.fixture
def tokens_file(tmp_path: Path) -> str:
    path = tmp_path / "tokens"
    path.write_text(entry("alice", "alice-token") + "\n")
    return str(path)


def test_data_routes_refuse_requests_without_a_client_token(tokens_file: str) -> None:
    s = settings(tokens_file)
    pool = ConnectionPool(s.database_url, 1, 1000)
    state = ApiState(s, pool, tokens=Tokens(tokens_file))
    before = {r: sample(metrics.AUTH_REFUSED, r) for r in ("missing", "malformed", "unknown")}
    try:
        replies = asyncio.run(_exchange(state, [
            ("/api/v1/sites", {}),
            ("/api/v1/sites/site-0/readings?limit=nonsense", {"Authorization": "Basic eDp5"}),
            ("/api/v1/sites/site-0/forecasts", {"Authorization": "Bearer bob-token"}),
            ("/api/v1/sites/site-0/hourly", {"Authorization": "Bearer alice-token"}),
            ("/api/v1/openapi.json", {}),
            ("/healthz", {}),
            ("/metrics", {}),
        ]))
    finally:
        pool.close()
    (s1, h1, b1), (s2, h2, b2), (s3, h3, b3), (s4, _, b4), open_routes = (
        replies[0], replies[1], replies[2], replies[3], replies[4:])
    assert (s1, h1["WWW-Authenticate"], h1["Content-Type"]) == (
        401, 'Bearer realm="energy-pipeline"', "application/problem+json")
    assert b1 == {"type": "about:blank", "title": "Unauthorized", "status": 401,
                  "detail": "this endpoint needs an Authorization: Bearer <token> header",
                  "errors": [{"parameter": "Authorization", "in": "header", "message":
                              "this endpoint needs an Authorization: Bearer <token> header"}]}
    # Authentication comes first: the bad `limit` is not even looked at.
    assert (s2, h2["WWW-Authenticate"], b2["detail"]) == (
        401, 'Bearer realm="energy-pipeline", error="invalid_token"',
        "the Authorization header must be Bearer <token>")
    assert (s3, h3["WWW-Authenticate"], b3["detail"]) == (
        401, 'Bearer realm="energy-pipeline", error="invalid_token"',
        "the token is not one of a client in the tokens file")
    # Alice gets past authentication to the (dead) database.
    assert (s4, b4["detail"]) == (503, "database unavailable")
    assert [status for status, _, _ in open_routes] == [200, 200, 200]
    assert {r: sample(metrics.AUTH_REFUSED, r) - before[r] for r in before} == {
        "missing": 1, "malformed": 1, "unknown": 1}


def test_a_client_beyond_its_rate_gets_429_with_retry_after(tokens_file: str) -> None:
    s = settings(tokens_file, api_rate_limit=0.5, api_rate_burst=2)
    pool = ConnectionPool(s.database_url, 1, 1000)
    state = ApiState(s, pool, tokens=Tokens(tokens_file))
    clock = Clock()
    state.limiter = RateLimiter(s.api_rate_limit, s.api_rate_burst, clock=clock)
    before = sample(metrics.RATE_LIMITED, "alice")
    alice = {"Authorization": "Bearer alice-token"}
    try:
        replies = asyncio.run(_exchange(state, [("/api/v1/sites?limit=nonsense", alice)] * 3))
        clock.now += 2.0  # one request's worth at 0.5 per second
        replies += asyncio.run(_exchange(state, [("/api/v1/sites?limit=nonsense", alice)] * 2))
    finally:
        pool.close()
    assert [r[0] for r in replies] == [400, 400, 429, 400, 429]
    _, headers, body = replies[2]
    assert (headers["Retry-After"], body["title"], body["detail"]) == (
        "2", "Too Many Requests",
        "client 'alice' exceeded 0.5 requests per second (burst 2); retry after 2 s")
    assert replies[4][1]["Retry-After"] == "2"  # the refilled one taken: 2 s to the next
    assert sample(metrics.RATE_LIMITED, "alice") == before + 2


def test_without_auth_every_request_is_anonymous_and_shares_one_bucket(tmp_path: Path) -> None:
    s = ApiSettings(database_url=DEAD_DB, api_auth="none", api_rate_limit=1, api_rate_burst=1)
    pool = ConnectionPool(s.database_url, 1, 1000)
    state = ApiState(s, pool)
    state.limiter = RateLimiter(1, 1, clock=Clock())
    try:
        replies = asyncio.run(_exchange(state, [("/api/v1/sites?limit=0", {})] * 2))
    finally:
        pool.close()
    assert [r[0] for r in replies] == [400, 429]
    assert "client 'anonymous' exceeded" in replies[1][2]["detail"]
