"""The checked-in gRPC modules are exactly what the .proto files generate today."""

from __future__ import annotations

from pathlib import Path

import pytest
from energy_harness import proto_generate as generate

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    written = generate.generate(tmp_path, REPO / "proto")
    assert written
    checked_in = generate.DEFAULT_OUT
    stale = [
        path.name
        for path in written
        if not (checked_in / path.name).exists()
        or (checked_in / path.name).read_text() != path.read_text()
    ]
    assert not stale, (
        f"{stale} differ from proto/: run `python -m energy_harness.proto_generate` and commit"
    )


def test_generated_modules_import_and_name_the_contract() -> None:
    from energy_pipeline.proto import forecaster_pb2, forecaster_pb2_grpc

    service = forecaster_pb2.DESCRIPTOR.services_by_name["Forecaster"]
    assert service.full_name == "energy.v1.Forecaster"
    assert {m.name for m in service.methods} == {"Forecast", "GetModelInfo"}
    assert hasattr(forecaster_pb2_grpc, "ForecasterStub")
