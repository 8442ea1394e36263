"""The tools that test, demonstrate and measure energy-pipeline; never part of the image.

    localstack      real Kafka, PostgreSQL, MQTT brokers and Kubernetes as local processes
    bench           `make bench`: data plane, forecast quality, serving
    demo            `energy-pipeline demo`
    commands        `energy-pipeline stack ...` and `energy-pipeline kube ...`
    operator_local  the operator as a local process against a test API server
    testing         what the tests share: wait_for, admin_sql
    synthetic       a synthetic building's hourly rows, for tests and benchmarks
    generate        `python -m energy_harness.generate`: every generated file from its source
"""
