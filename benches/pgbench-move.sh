#!/usr/bin/env bash
# MoveLead through the service versus the same SQL through pgbench, at the same concurrency,
# against the same PostgreSQL server, in one run. Prints one table of ratios.
#
#   bash benches/pgbench-move.sh                 # 1, 8 and 16 clients, 10 s each
#   CLIENTS="8" DURATION=20 bash benches/pgbench-move.sh
#
# Environment: PG_SERVER_URL (default postgres://postgres@127.0.0.1:5432), CLIENTS, DURATION
# (seconds), LEADS (leads moved at random), SERVER_CPU / DRIVER_CPU (pinning; defaults 1 and 0
# on machines with two or more CPUs).
set -euo pipefail
cd "$(dirname "$0")/.."

PG_SERVER_URL=${PG_SERVER_URL:-postgres://postgres@127.0.0.1:5432}
CLIENTS=${CLIENTS:-1 8 16}
DURATION=${DURATION:-10}
LEADS=${LEADS:-1000}
DATABASE=leadpipe_pgbench
source benches/pin-cpus.sh

cargo build --release --quiet -p leadpipe -p leadpipe-bench --bins
work=$(mktemp -d)
trap 'rm -rf "$work"; psql "$PG_SERVER_URL/postgres" -qc "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" >/dev/null' EXIT

# The schema is the service's own: its migrations, then leads seeded in SQL.
psql "$PG_SERVER_URL/postgres" -qc "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)"
psql "$PG_SERVER_URL/postgres" -qc "CREATE DATABASE $DATABASE"
./target/release/leadpipe --database-url "$PG_SERVER_URL/$DATABASE" migrate >/dev/null
psql "$PG_SERVER_URL/$DATABASE" -q <<SQL
-- Moves only share-lock the pipeline row, so its definition does not matter here.
INSERT INTO pipelines (tenant_id, id, display_name, definition, version, create_time, update_time)
     VALUES ('pgbench-0', 'default', 'Default', '{}', 1, 0, 0);
INSERT INTO leads (tenant_id, id, title, company, contact_name, owner, source, pipeline_id, stage,
                   amount_currency, amount_units, win_probability, expected_value, create_time,
                   update_time, stage_enter_time, version)
     SELECT 'pgbench-0', 'lead-' || n, 'bench mover ' || n, 'Company ' || n, 'Contact ' || n, 'ana',
            'web', 'default', 'lead_generation', 'EUR', 1000, 0.1, 100, 0, 0, 0, 1
       FROM generate_series(1, $LEADS) AS n;
ANALYZE;
SQL
# An outbox payload of the size the service writes (the event as JSON, about 1.2 KB).
payload=$(printf '{"change":{"sequence":0,"lead_id":"lead","pipeline_id":"default","from_stage":"lead_generation","to_stage":"qualification","change_time":"2026-01-01T00:00:00Z","actor":"anonymous","note":"","imported":false},"lead":{"pad":"%0900d"}}' 0)

printf '| clients | pgbench TPS | MoveLead RPS | MoveLead ÷ pgbench |\n|--:|--:|--:|--:|\n'
for c in $CLIENTS; do
  pg_tps=$("${pin_driver[@]}" pgbench -n -M prepared -c "$c" -j "$c" -T "$DURATION" \
    -D leads="$LEADS" -D tenants=1 -D payload="$payload" -f benches/pgbench/move_lead.sql \
    "$PG_SERVER_URL/$DATABASE" 2>"$work/pgbench.err" |
    awk '/^tps = / { print $3 }')
  if [ -z "$pg_tps" ]; then
    cat "$work/pgbench.err" >&2
    exit 1
  fi
  ./target/release/leadpipe-bench --database-url "$PG_SERVER_URL/postgres" --fresh-postgres-db \
    --scenario move --clients "$c" --duration "${DURATION}s" --warmup 1s --seed-leads "$LEADS" \
    "${pin_flags[@]}" --json "$work/move.json" >"$work/bench.log" 2>&1 || { cat "$work/bench.log" >&2; exit 1; }
  rps=$(jq -r '[.cells[] | select(.scenario == "move")][0].throughput_rps' "$work/move.json")
  printf '| %s | %.0f | %.0f | %.2f |\n' "$c" "$pg_tps" "$rps" "$(awk -v a="$rps" -v b="$pg_tps" 'BEGIN { print a / b }')"
done
