"""The checked-in gRPC modules load and name the contract (that they are exactly what the
.proto files generate today is checked by tests/unit/test_generated_files.py)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit


def test_generated_modules_import_and_name_the_contract() -> None:
    from energy_pipeline.proto import forecaster_pb2, forecaster_pb2_grpc

    service = forecaster_pb2.DESCRIPTOR.services_by_name["Forecaster"]
    assert service.full_name == "energy.v1.Forecaster"
    assert {m.name for m in service.methods} == {"Forecast", "GetModelInfo"}
    assert hasattr(forecaster_pb2_grpc, "ForecasterStub")
