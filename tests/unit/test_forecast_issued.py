"""Future covariates read as of each origin (issue #20): the newest issue strictly before it,
never a later one, for many (origin, hour) pairs at once."""

from __future__ import annotations

import numpy as np
import pytest
from energy_pipeline.forecasting.issued import IssuedSeries

pytestmark = pytest.mark.unit


def t(text: str) -> np.datetime64:
    return np.datetime64(text, "s")


# Two issues for hours 12..14: at 06:00 (12 -> 1.0, 13 -> 2.0, 14 -> 3.0) and at 09:30
# (13 -> 20.0, 14 -> NaN: the newer issue says nothing of 14).
SERIES = IssuedSeries(
    issued_at=np.array([t("2025-01-01T06:00"), t("2025-01-01T06:00"), t("2025-01-01T06:00"),
                        t("2025-01-01T09:30"), t("2025-01-01T09:30")]),
    valid_time=np.array(["2025-01-01T12", "2025-01-01T13", "2025-01-01T14",
                         "2025-01-01T13", "2025-01-01T14"], dtype="datetime64[h]"),
    values=np.array([1.0, 2.0, 3.0, 20.0, np.nan]),
)
HOURS = np.array(["2025-01-01T12", "2025-01-01T13", "2025-01-01T14", "2025-01-01T15"],
                 dtype="datetime64[h]")


def test_each_hour_reads_the_newest_issue_strictly_before_the_origin() -> None:
    value, issued = SERIES.as_of(np.full(4, t("2025-01-01T10:00")), HOURS)
    np.testing.assert_array_equal(value, [1.0, 20.0, 3.0, np.nan])
    assert list(issued[:3]) == [t("2025-01-01T06:00"), t("2025-01-01T09:30"),
                                t("2025-01-01T06:00")]
    assert np.isnat(issued[3])


def test_an_issue_made_at_the_origin_itself_is_not_yet_known() -> None:
    at, _ = SERIES.as_of(np.full(4, t("2025-01-01T09:30")), HOURS)
    np.testing.assert_array_equal(at, [1.0, 2.0, 3.0, np.nan])
    first, _ = SERIES.as_of(np.full(4, t("2025-01-01T06:00")), HOURS)
    assert np.isnan(first).all()


def test_every_pair_has_its_own_origin() -> None:
    origins = np.array([t("2025-01-01T07:00"), t("2025-01-01T11:00")] * 2)
    hours = np.repeat(HOURS[1:3], 2)
    value, _ = SERIES.as_of(origins, hours)
    np.testing.assert_array_equal(value, [2.0, 20.0, 3.0, 3.0])


def test_before_keeps_what_was_issued_before_the_origin_only() -> None:
    early = SERIES.before(t("2025-01-01T09:30"))
    assert len(early) == 3 and (early.issued_at < t("2025-01-01T09:30")).all()
    late, _ = early.as_of(np.full(4, t("2025-01-02T00:00")), HOURS)
    np.testing.assert_array_equal(late, [1.0, 2.0, 3.0, np.nan])


def test_an_issue_naming_one_hour_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        IssuedSeries(np.array([t("2025-01-01T06:00")] * 2),
                     np.array(["2025-01-01T12"] * 2, dtype="datetime64[h]"),
                     np.array([1.0, 2.0]))


def test_agrees_with_a_plain_search_on_random_issues() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    base = t("2025-03-01T00:00")
    issued = base + rng.integers(0, 30 * 24 * 3600, n).astype("timedelta64[s]")
    valid = (issued.astype("datetime64[h]")
             + rng.integers(0, 72, n).astype("timedelta64[h]"))
    values = rng.normal(size=n)
    series = IssuedSeries(issued, valid, values)
    origins = base + rng.integers(0, 31 * 24 * 3600, 500).astype("timedelta64[s]")
    hours = origins.astype("datetime64[h]") + rng.integers(0, 48, 500).astype("timedelta64[h]")
    got, _ = series.as_of(origins, hours)
    for o, h, g in zip(origins, hours, got, strict=True):
        candidates = (valid == h) & (issued < o)
        if not candidates.any():
            assert np.isnan(g)
            continue
        newest = issued[candidates].max()
        expected = values[candidates & (issued == newest)]
        assert len(expected) == 1 and g == expected[0]
