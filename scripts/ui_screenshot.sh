#!/usr/bin/env bash
# Screenshots of the Prefect UI for the README: a real `prefect server start`, a small run
# (--only A5,A8 on the embedded default) against it, then headless Chromium (Debian's package,
# installed here if missing) on the flow-run page and its Artifacts tab.
#   usage: bash scripts/ui_screenshot.sh   (after make setup)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if ! command -v chromium >/dev/null; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
work=$(mktemp -d)
port=${PORT:-4219}
export PREFECT_HOME="$work/home" PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
# the UI bundle is configured at server start with the API address it calls
export PREFECT_UI_API_URL="http://127.0.0.1:$port/api"
"$PY" -m prefect server start --host 127.0.0.1 --port "$port" >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
api="http://127.0.0.1:$port/api"
for _ in $(seq 1 180); do curl -sf "$api/health" >/dev/null && break; sleep 1; done
PREFECT_API_URL="$api" PREFECT_RESULTS_LOCAL_STORAGE_PATH="$work/results" \
  "$PY" flows/ablations.py --only A5,A8 --data "$work/data"
flow_id=$(curl -sf -X POST "$api/flow_runs/filter" -H 'Content-Type: application/json' \
  -d '{"flow_runs": {"parent_task_run_id": {"is_null_": true}}, "limit": 1}' |
  "$PY" -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')
shoot() {
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/chrome" --window-size=1500,1000 --virtual-time-budget=25000 \
    --hide-scrollbars --screenshot="$2" "$1" 2>/dev/null
}
shoot "http://127.0.0.1:$port/runs/flow-run/$flow_id" docs/prefect-flow-run.png
artifact_id=$(curl -sf -X POST "$api/artifacts/filter" -H 'Content-Type: application/json' \
  -d '{"artifacts": {"key": {"any_": ["a8-main-table"]}}, "limit": 1}' |
  "$PY" -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')
shoot "http://127.0.0.1:$port/artifacts/artifact/$artifact_id" docs/prefect-artifacts.png
progress_id=$(curl -sf -X POST "$api/artifacts/filter" -H 'Content-Type: application/json' \
  -d '{"artifacts": {"key": {"any_": ["baseline-progress"]}}, "limit": 1}' |
  "$PY" -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')
shoot "http://127.0.0.1:$port/artifacts/artifact/$progress_id" docs/prefect-progress.png
shoot "http://127.0.0.1:$port/runs?tab=flow-runs" docs/prefect-runs-tags.png
echo "wrote docs/prefect-{flow-run,artifacts,progress,runs-tags}.png (flow run $flow_id)"
