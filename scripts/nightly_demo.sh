#!/usr/bin/env bash
# The main job, embedded: the demo line's nightly DAG, end to end, on one machine.
#
# Sets up a fresh line workspace (runs/demo: git + DVC, local DVC remote, MLflow sqlite)
# whose inbox holds a night of generated demo images, an Airflow home (runs/airflow,
# sqlite), migrates Airflow's database, creates the line's git/DVC pool and serializes the
# DAGs, then runs the DAG for real with `airflow dags test`. A second night of NEW demo
# images follows, so the gate compares the new candidate against the first night's
# champion. Needs `exdd` and `airflow` on PATH (`make nightly` provides both).
#
# Everything it creates lives under runs/ (the workspace, its DVC remote runs/exdd-remote,
# the Airflow home); those three are recreated on every call.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LINE="${EXDD_LINE:-demo}"
export EXDD_PARAMS="$ROOT/params.yaml"
export AIRFLOW_HOME="$ROOT/runs/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"
export EXDD_USER="${EXDD_USER:-nightly-demo}"

for tool in exdd airflow git dvc; do
  command -v "$tool" >/dev/null || { echo "nightly_demo: '$tool' is not on PATH (run 'make nightly')" >&2; exit 2; }
done
WORKSPACE="$(exdd lines --line "$LINE" --field workspace)"
POOL="$(exdd lines --line "$LINE" --field pool)"
DAG_ID="exdd_nightly_${LINE}"
REMOTE="$ROOT/runs/exdd-remote"
START=$SECONDS

step() { printf '\n== %s (%ss)\n' "$1" "$((SECONDS - START))"; }

night() {  # night N LOGICAL_DATE: run the DAG once, print the outcome
  local log="$AIRFLOW_HOME/dags-test-$1.log"
  step "night $1: airflow dags test $DAG_ID $2 (log: ${log#"$ROOT"/})"
  if ! airflow dags test "$DAG_ID" "$2" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "nightly_demo: night $1 failed; full log in $log" >&2
    exit 1
  fi
  grep -E "DagRun Finished" "$log" | tail -n 1 | sed -E 's/.*(state=[a-z_]+).*/  dag run: \1/'
  exdd outcomes --line "$LINE"
}

step "fresh line workspace $WORKSPACE (demo images in its inbox)"
rm -rf "$WORKSPACE" "$REMOTE" "$AIRFLOW_HOME"
exdd workspace init "$WORKSPACE" --remote "$REMOTE"

step "Airflow home ${AIRFLOW_HOME#"$ROOT"/}: db migrate, pool, reserialize"
mkdir -p "$AIRFLOW_HOME"
airflow db migrate >"$AIRFLOW_HOME/setup.log" 2>&1
airflow pools set "$POOL" 1 "git/DVC steps of line ${LINE}, one at a time" \
  >>"$AIRFLOW_HOME/setup.log" 2>&1
airflow dags reserialize >>"$AIRFLOW_HOME/setup.log" 2>&1
airflow dags list-import-errors 2>/dev/null | grep -q "No data found" || {
  airflow dags list-import-errors >&2; exit 1; }

night 1 "$(date -u -d yesterday +%Y-%m-%dT02:00:00+00:00)"

step "new demo images for the second night"
exdd drop-demo --line "$LINE" --seed 1
night 2 "$(date -u +%Y-%m-%dT02:00:00+00:00)"

step "summary"
exdd outcomes --line "$LINE" --last 2
exdd models --repo "$WORKSPACE" --line "$LINE"
echo "review outputs: $WORKSPACE/reviews/scores/, outcomes: $WORKSPACE/reports/outcomes/"
echo "wall time: $((SECONDS - START)) s"
