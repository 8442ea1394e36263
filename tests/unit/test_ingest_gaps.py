"""Ingest finds the Kafka records that retention deleted before they were stored, exactly."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from energy_pipeline.dataplane.ingest import find_gaps
from energy_pipeline.db.connect import connection_trouble
from energy_pipeline.db.writer import Gap

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Record:
    """What find_gaps reads of a confluent_kafka Message."""

    _topic: str
    _partition: int
    _offset: int

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


def records(topic: str, partition: int, *offsets: int) -> list[Record]:
    return [Record(topic, partition, o) for o in offsets]


def test_contiguous_offsets_from_the_committed_one_have_no_gap() -> None:
    expected = {("t", 0): 10}
    assert find_gaps(records("t", 0, 10, 11, 12), expected) == []
    assert expected == {("t", 0): 13}


def test_a_batch_starting_beyond_the_committed_offset_reveals_what_retention_deleted() -> None:
    expected = {("t", 0): 10, ("t", 1): 5}
    batch = records("t", 1, 5, 6) + records("t", 0, 250, 251)
    assert find_gaps(batch, expected) == [Gap("t", 0, 10, 249)]
    assert Gap("t", 0, 10, 249).records == 240
    assert expected == {("t", 0): 252, ("t", 1): 7}


def test_holes_inside_a_batch_and_across_batches_are_each_reported_once() -> None:
    expected: dict[tuple[str, int], int] = {("t", 0): 0}
    assert find_gaps(records("t", 0, 0, 1, 5, 6), expected) == [Gap("t", 0, 2, 4)]
    assert find_gaps(records("t", 0, 9), expected) == [Gap("t", 0, 7, 8)]
    assert find_gaps(records("t", 0, 10), expected) == []


def test_a_partition_without_a_committed_offset_starts_unchecked_then_is_followed() -> None:
    expected: dict[tuple[str, int], int] = {}
    assert find_gaps(records("t", 2, 400, 401), expected) == []
    assert find_gaps(records("t", 2, 403), expected) == [Gap("t", 2, 402, 402)]


def test_a_replay_below_the_expected_offset_is_no_gap() -> None:
    expected = {("t", 0): 100}
    assert find_gaps(records("t", 0, 90, 91), expected) == []
    assert expected == {("t", 0): 92}


@pytest.mark.parametrize(("sqlstate", "cured_by_waiting"), [
    ("08006", True),  # connection failure
    ("57P01", True),  # admin shutdown
    ("40001", True),  # serialization failure
    ("53300", True),  # too many connections
    ("42501", False),  # insufficient privilege
    ("42P01", False),  # undefined table
    ("53100", False),  # disk full
])
def test_only_connection_and_server_state_errors_count_as_passing(
    sqlstate: str, cured_by_waiting: bool
) -> None:
    assert connection_trouble(sqlstate) is cured_by_waiting

