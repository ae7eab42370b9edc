#!/usr/bin/env bash
# The operator review dashboard (dashboards/app.py), served on 127.0.0.1 only, headless.
# Config: params.yaml (or $EXDD_PARAMS), section `review`; port: $EXDD_DASHBOARD_PORT, else
# review.port. To serve other machines, put an authenticating reverse proxy in front and
# set review.auth: header (or secret); never bind the server itself to another address.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${EXDD_DASHBOARD_PORT:-$(python -c 'from exdd.config import load_params; print(load_params().review.port)')}"
exec streamlit run dashboards/app.py \
    --server.address 127.0.0.1 \
    --server.port "$port" \
    --server.headless true \
    --server.fileWatcherType none \
    --browser.gatherUsageStats false \
    --client.toolbarMode viewer \
    "$@"
