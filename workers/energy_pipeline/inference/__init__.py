"""The inference service (`energy-pipeline inference`) and its gRPC client.

Modules:
    convert   hourly_features rows and forecasts <-> protobuf messages
    store     the promoted models loaded from the registry, hot-swapped on refresh
    server    the gRPC server: Forecaster, grpc.health.v1, reflection, Prometheus metrics
    client    channel to every inference endpoint (round robin, retries, deadlines)
"""
