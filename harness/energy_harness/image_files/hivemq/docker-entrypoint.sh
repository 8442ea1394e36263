#!/usr/bin/env bash
# The official image's entrypoint contract: the bundled allow-all extension stays only while
# HIVEMQ_ALLOW_ALL_CLIENTS is exactly "true" (the image's default); any other value removes
# its folder before HiveMQ starts, so HiveMQ CE then admits no client unless another security
# extension is installed. Then the command runs as given (by default bin/run.sh).
set -eo pipefail

if [[ "${HIVEMQ_ALLOW_ALL_CLIENTS:-}" != "true" ]]; then
    echo "Disabling allow all extension"
    # Like the official entrypoint, a failed removal does not stop the start; the image
    # test checks that the folder is gone under the chart's user and group.
    rm -rf /opt/hivemq/extensions/hivemq-allow-all-extension 2>/dev/null || true
fi

exec "$@"
