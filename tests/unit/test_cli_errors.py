"""One error path for every command, librdkafka's throttled lines, and --help with substance."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import re
from collections.abc import Iterator

import pytest
from energy_harness import generate
from energy_operator.settings import OperatorSettings
from energy_pipeline import cli
from energy_pipeline.core.errors import USAGE, CommandError, one_line, redact
from energy_pipeline.core.kafka import ConnectionLogThrottle, as_command_error, client_config
from energy_pipeline.core.settings import (
    CommonSettings,
    SettingsError,
    env,
    environment_help,
    http_port_field,
)

pytestmark = pytest.mark.unit


# ---- the one line ---------------------------------------------------------------------------


def test_redact_hides_every_kind_of_password() -> None:
    assert redact("postgresql://energy:s3cret@db:5432/energy") == (
        "postgresql://energy:***@db:5432/energy")
    assert redact("host=db password=s3cret user=energy") == "host=db password=*** user=energy"
    assert redact("host=db password='a b' user=x") == "host=db password=*** user=x"
    assert redact("postgresql://db/energy?password=s3cret&sslmode=require") == (
        "postgresql://db/energy?password=***&sslmode=require")
    assert redact("postgresql://energy@db/energy") == "postgresql://energy@db/energy"
    assert one_line("a\n\tb  c postgresql://u:pw@h/d") == "a b c postgresql://u:***@h/d"


def _fail(exc: Exception, capsys: pytest.CaptureFixture[str], debug: bool = False
          ) -> tuple[int, list[str]]:
    try:
        raise exc
    except Exception as raised:
        status = cli.fail("migrate", raised, debug)
    return status, capsys.readouterr().err.splitlines()


def test_a_command_error_is_one_line_with_its_status(capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = _fail(CommandError("X_PORT 1 is taken", fix="set X_PORT", status=USAGE),
                          capsys)
    assert (status, lines) == (2, ["energy-pipeline migrate: error: X_PORT 1 is taken; set X_PORT"])


def test_settings_errors_are_one_usage_line(capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = _fail(SettingsError("invalid settings: A is required; B: bad"), capsys)
    assert status == 2
    assert lines == ["energy-pipeline migrate: error: invalid settings: A is required; B: bad; "
                     "set them in the environment (`energy-pipeline migrate --help` lists them)"]


def test_an_unexpected_exception_is_one_line_unless_debug(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, lines = _fail(KeyError("postgresql://u:pw@h/db\nsecond line"), capsys)
    assert status == 1
    assert lines == ["energy-pipeline migrate: error: KeyError: 'postgresql://u:***@h/db\\nsecond "
                     "line' (run with --debug for the stack trace)"]
    status, lines = _fail(ValueError("boom"), capsys, debug=True)
    assert status == 1 and lines[0] == "Traceback (most recent call last):"
    assert lines[-1] == "energy-pipeline migrate: error: ValueError: boom"


def test_an_unreachable_kafka_cluster_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from confluent_kafka import KafkaError, KafkaException

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    error = as_command_error(KafkaException(KafkaError(KafkaError._TRANSPORT, "down")))
    assert error is not None and error.status == 1
    assert "KAFKA_BOOTSTRAP_SERVERS=k1:9092,k2:9092" in str(error)
    assert as_command_error(KafkaException(KafkaError(KafkaError.TOPIC_ALREADY_EXISTS))) is None
    assert as_command_error(ValueError("x")) is None


def test_debug_is_taken_before_or_after_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []

    def fake_fail(command: str, exc: Exception, debug: bool) -> int:
        seen.append(debug)
        return 1

    monkeypatch.setattr(cli, "fail", fake_fail)
    monkeypatch.setenv("LOG_LEVEL", "INFO")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    for argv in (["--debug", "migrate"], ["migrate", "--debug"], ["migrate"]):
        assert cli.main(argv) == 1
    monkeypatch.setenv("LOG_LEVEL", "debug")
    assert cli.main(["migrate"]) == 1
    assert seen == [True, True, False, True]


# ---- librdkafka's lines ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(message: str, client: str = "vm#consumer-1", facility: str = "FAIL"
            ) -> logging.LogRecord:
    return logging.LogRecord("librdkafka", logging.ERROR, "", 0, "%s [%s] %s",
                             (facility, client, message), None)


def _refused(broker: str, ms: int = 0, state: str = "CONNECT") -> logging.LogRecord:
    host = broker.split("/")[0]
    return _record(f"[thrd:{broker}]: {broker}: Connect to ipv4#{host} failed: Connection "
                   f"refused (after {ms}ms in state {state})")


def test_the_throttle_passes_one_line_per_broker_state() -> None:
    clock = Clock()
    throttle = ConnectionLogThrottle(remind_s=60, quiet_s=30, clock=clock)
    passed = []
    for n in range(200):  # 20 a second for 10 s, as a consumer logs them
        clock.now += 0.05
        passed.append(throttle.filter(_refused("k1:9092/bootstrap", ms=n % 7)))
        passed.append(throttle.filter(_refused("k2:9092/2", ms=n % 5)))
    assert sum(passed) == 2  # one per broker
    # Another state of the same broker is news; so is the first state again.
    clock.now += 1
    assert throttle.filter(_record("[thrd:k1:9092/bootstrap]: k1:9092/bootstrap: Disconnected"))
    assert throttle.filter(_refused("k1:9092/bootstrap"))
    assert not throttle.filter(_refused("k1:9092/bootstrap"))


def test_the_throttle_reminds_with_a_count_and_notices_a_quiet_spell() -> None:
    clock = Clock()
    throttle = ConnectionLogThrottle(remind_s=60, quiet_s=30, clock=clock)
    assert throttle.filter(_refused("k1:9092/1"))
    for _ in range(59):
        clock.now += 1
        assert not throttle.filter(_refused("k1:9092/1"))
    clock.now += 1
    reminder = _refused("k1:9092/1")
    assert throttle.filter(reminder) and reminder.repeated == 59  # type: ignore[attr-defined]
    clock.now += 31  # silent: the broker was back
    fresh = _refused("k1:9092/1")
    assert throttle.filter(fresh) and not hasattr(fresh, "repeated")


def test_error_callbacks_and_other_clients_have_keys_of_their_own() -> None:
    throttle = ConnectionLogThrottle(clock=Clock())
    down = _record("1/1 brokers are down", client="_ALL_BROKERS_DOWN", facility="ERROR")
    assert throttle.filter(down)
    assert not throttle.filter(
        _record("1/1 brokers are down", client="_ALL_BROKERS_DOWN", facility="ERROR"))
    assert throttle.filter(_refused("k1:9092/1"))
    other = _record("[thrd:k1:9092/1]: k1:9092/1: Connect to ipv4#k1 failed: Connection refused "
                    "(after 0ms in state CONNECT)", client="vm#producer-2")
    assert throttle.filter(other)


def test_every_client_config_logs_through_the_throttle() -> None:
    config = client_config("k:9092")
    logger = config["logger"]
    assert logger is logging.getLogger("librdkafka")
    assert [f for f in logger.filters if isinstance(f, ConnectionLogThrottle)]
    assert callable(config["error_cb"])
    client_config("k:9092")  # installed once
    assert len([f for f in logger.filters if isinstance(f, ConnectionLogThrottle)]) == 1


# ---- --help ---------------------------------------------------------------------------------


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[
        tuple[str, argparse.ArgumentParser]]:
    """Every command and sub-command parser below `parser`, by its full name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix} {name}".strip()
                yield full, sub
                yield from _commands(sub, full)


def _settings_of() -> dict[str, list[type]]:
    """command -> the settings classes it loads (the README generator's map), operator too."""
    found: dict[str, list[type]] = {"operator": [OperatorSettings]}
    for qualified, commands in generate.USED_BY.items():
        module, _, name = qualified.rpartition(".")
        for command in commands:
            found.setdefault(command, []).append(getattr(importlib.import_module(module), name))
    return found


ALL_COMMANDS = sorted(name for name, _ in _commands(cli.build_parser()))
# Commands whose options have defaults worth showing (the list), and what they show.
DEFAULTS_SHOWN = {
    "demo": "(default: 15d)", "stack up": "(default: 3)", "topics create": "(default: 10",
    "backtest": "(default: 24h)", "train": "(default: all sites)",
}  # fmt: skip


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_every_command_has_a_description_and_its_variables(
    command: str, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main([*command.split(), "--help"])
    text = capsys.readouterr().out
    parser = dict(_commands(cli.build_parser()))[command]
    assert parser.description and parser.description.strip(), command
    leaf = not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
    # The command that loads the settings lists them (`topics create`, not `topics`).
    classes = _settings_of().get(command.split()[0], []) if leaf else []
    for cls in classes:
        for f in dataclasses.fields(cls):
            if "env" in f.metadata:
                assert re.search(rf"^  {f.metadata['env']} ", text, re.M), (command, f.name)
    if command in DEFAULTS_SHOWN:
        assert DEFAULTS_SHOWN[command] in " ".join(text.split()), command


def test_each_worker_has_its_own_http_port_and_the_help_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    defaults = {}
    for command, classes in _settings_of().items():
        for cls in classes:
            found = {f.name: f.default for f in dataclasses.fields(cls)}
            if "http_port" in found:
                defaults[command] = found["http_port"]
    # The one-shot commands (migrate, topics, train, simulate, backtest) serve nothing.
    assert defaults == {
        "bridge": 9101, "ingest": 9102, "inference": 9103, "api": 9104, "operator": 8080}
    with pytest.raises(SystemExit):
        cli.main(["ingest", "--help"])
    assert re.search(r"^  HTTP_PORT +9102: port of /metrics", capsys.readouterr().out, re.M)


def test_environment_help_gives_units_and_spells_defaults_as_the_environment_does() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Example(CommonSettings):
        http_port: int = http_port_field(9999)
        wait_s: float = env("X_WAIT_S", 10.0, doc="how long")
        on: bool = env("X_ON", True, doc="switch")
        url: str = env("X_URL", doc="where " * 30)

    text = environment_help(Example)
    assert "  X_WAIT_S       10 seconds: how long\n" in text
    assert "  X_ON           true: switch\n" in text
    assert "  HTTP_PORT      9999: port of" in text
    assert all(len(line) <= 100 for line in text.splitlines())


def test_the_readme_table_shows_a_default_per_worker() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class _Base:
        port: int = env("Y_PORT", 8080, doc="port")

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class _Worker(_Base):
        port: int = env("Y_PORT", 9101, doc="port")

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class _Other(_Base):
        pass

    used_by = {generate.qualified_name(_Base): (), generate.qualified_name(_Worker): ("w",),
               generate.qualified_name(_Other): ("o",)}
    table = generate.settings_table([_Base, _Worker, _Other], used_by)
    assert "| `Y_PORT` | o `8080`, w `9101` | all | port |" in table
