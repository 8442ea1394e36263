"""Generated gRPC code for `proto/energy/v1/*.proto` (regenerate with `python -m
energy_harness.generate`; a unit test fails when the checked-in files are stale)."""
