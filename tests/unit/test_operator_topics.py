"""Topic reconciliation plans (energy_pipeline.dataplane.topics): create, grow, refuse to shrink."""

from __future__ import annotations

import pytest
from energy_pipeline.dataplane.topics import (
    TopicSpec,
    TopicState,
    config_drift,
    describe_problems,
    plan_topic,
)

pytestmark = pytest.mark.unit

SPEC = TopicSpec("e.temperature", partitions=4, replication_factor=2)


@pytest.mark.parametrize(
    ("current", "action"),
    [
        (None, "create"),
        (TopicState("e.temperature", 4, 2), "none"),
        (TopicState("e.temperature", 2, 2), "grow"),
        (TopicState("e.temperature", 6, 2), "shrink_refused"),
        (TopicState("e.temperature", 4, 3), "replication_differs"),
        # Growing comes first: a replication difference does not block more partitions.
        (TopicState("e.temperature", 2, 3), "grow"),
    ],
)
def test_plan(current: TopicState | None, action: str) -> None:
    assert plan_topic(SPEC, current).action == action


def test_problems_name_every_topic_and_what_to_do() -> None:
    plans = [
        plan_topic(TopicSpec("e.a", 4, 2), TopicState("e.a", 6, 2)),
        plan_topic(TopicSpec("e.b", 4, 2), TopicState("e.b", 8, 2)),
        plan_topic(TopicSpec("e.c", 4, 2), TopicState("e.c", 4, 1)),
        plan_topic(TopicSpec("e.d", 4, 2), TopicState("e.d", 4, 2)),
    ]
    shrink, differs = describe_problems(plans)
    assert "e.a (6)" in shrink and "e.b (8)" in shrink and "cannot remove" in shrink
    assert "e.c (1)" in differs and "reassign" in differs
    assert describe_problems(plans[3:]) == []


def test_config_drift_names_the_topics_off_the_spec_with_their_values() -> None:
    assert config_drift({"b": "1", "a": "2", "c": "1"}, "2") == {"b": "1", "c": "1"}
    assert config_drift({"a": "2"}, "2") == {}
