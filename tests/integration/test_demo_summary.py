"""The demo's live view reads the model and the latest forecast of the site its plot shows,
not whichever site was trained or forecast last."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from energy_harness.demo import SITE, database_summary

pytestmark = pytest.mark.integration

HOUR = datetime(2026, 12, 1, 10, tzinfo=UTC)


def test_the_summary_names_the_plotted_sites_model_when_another_site_is_newer(
    database: str,
) -> None:
    other = "site-1"
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        # site-1's model is promoted later and its forecast is the newest of all.
        for site, promoted in ((SITE, HOUR), (other, HOUR + timedelta(minutes=5))):
            cur.execute(
                """INSERT INTO models (version, site_id, artifact, promoted, promoted_at)
                   VALUES (%s, %s, '{}', true, %s)""",
                (f"{site}.v1", site, promoted),
            )
        for site, target, p50, actual in ((SITE, HOUR, 10.0, 10.5),
                                          (other, HOUR + timedelta(hours=1), 50.0, 49.0)):
            cur.execute(
                """INSERT INTO hourly_features (site_id, hour, sum_energyconsumption,
                                                n_energyconsumption) VALUES (%s, %s, %s, 1)""",
                (site, target, actual),
            )
            cur.execute(
                """INSERT INTO forecasts (site_id, issued_at, target_time, horizon,
                                          model_version, p10, p50, p90)
                   VALUES (%s, %s, %s, 1, %s, %s, %s, %s)""",
                (site, target - timedelta(hours=1), target, f"{site}.v1", p50 - 1, p50, p50 + 1),
            )
    summary = database_summary(database)
    assert summary["site"] == SITE
    assert summary["model"] == f"{SITE}.v1"
    assert summary["last_pair"] == (HOUR, 10.0, 9.0, 11.0, 10.5)
    assert summary["forecasts"] == 2  # the totals stay the whole pipeline's
