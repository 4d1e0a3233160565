#!/usr/bin/env bash
# What limits one tenant's write rate on PostgreSQL: the SQL of one MoveLead transaction
# (benches/pgbench/move_lead.sql) through pgbench, with every client moving leads of one tenant,
# then with each client on a tenant of its own, at the same concurrency, in one run. Prints one
# table of ratios. No service is involved: this is the database's own ceiling.
#
#   bash benches/pgbench-tenants.sh              # 1, 16 and 64 clients, 10 s each
#   CLIENTS="64" DURATION=20 bash benches/pgbench-tenants.sh
#
# Environment: PG_SERVER_URL (default postgres://postgres@127.0.0.1:5432), CLIENTS, DURATION
# (seconds), LEADS (leads per tenant, moved at random), LEADPIPE (the binary that migrates the
# database; default: a release build of this checkout).
set -euo pipefail
cd "$(dirname "$0")/.."

PG_SERVER_URL=${PG_SERVER_URL:-postgres://postgres@127.0.0.1:5432}
CLIENTS=${CLIENTS:-1 16 64}
DURATION=${DURATION:-10}
LEADS=${LEADS:-1000}
DATABASE=leadpipe_pgbench_tenants
most=$(printf '%s\n' $CLIENTS | sort -n | tail -1)

if [ -z "${LEADPIPE:-}" ]; then
  cargo build --release --quiet -p leadpipe --bin leadpipe
  LEADPIPE=./target/release/leadpipe
fi
work=$(mktemp -d)
trap 'rm -rf "$work"; psql "$PG_SERVER_URL/postgres" -qc "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" >/dev/null' EXIT

psql "$PG_SERVER_URL/postgres" -qc "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)"
psql "$PG_SERVER_URL/postgres" -qc "CREATE DATABASE $DATABASE"
"$LEADPIPE" --database-url "$PG_SERVER_URL/$DATABASE" migrate >/dev/null
psql "$PG_SERVER_URL/$DATABASE" -q <<SQL
INSERT INTO pipelines (tenant_id, id, display_name, definition, version, create_time, update_time)
     SELECT 'pgbench-' || t, 'default', 'Default', '{}', 1, 0, 0
       FROM generate_series(0, $most - 1) AS t;
INSERT INTO leads (tenant_id, id, title, company, contact_name, owner, source, pipeline_id, stage,
                   amount_currency, amount_units, win_probability, expected_value, create_time,
                   update_time, stage_enter_time, version)
     SELECT 'pgbench-' || t, 'lead-' || n, 'bench mover ' || n, 'Company ' || n, 'Contact ' || n,
            'ana', 'web', 'default', 'lead_generation', 'EUR', 1000, 0.1, 100, 0, 0, 0, 1
       FROM generate_series(0, $most - 1) AS t, generate_series(1, $LEADS) AS n;
ANALYZE;
SQL
payload=$(printf '{"change":{"sequence":0,"lead_id":"lead","pipeline_id":"default","from_stage":"lead_generation","to_stage":"qualification","change_time":"2026-01-01T00:00:00Z","actor":"anonymous","note":"","imported":false},"lead":{"pad":"%0900d"}}' 0)

tps() {
  pgbench -n -M prepared -c "$1" -j "$(( $1 < 4 ? $1 : 4 ))" -T "$DURATION" \
    -D leads="$LEADS" -D tenants="$2" -D payload="$payload" -f benches/pgbench/move_lead.sql \
    "$PG_SERVER_URL/$DATABASE" 2>"$work/pgbench.err" | awk '/^tps = / { print $3 }'
}

printf '| clients | one tenant TPS | a tenant per client TPS | one tenant ÷ a tenant per client |\n|--:|--:|--:|--:|\n'
for c in $CLIENTS; do
  one=$(tps "$c" 1)
  many=$(tps "$c" "$c")
  if [ -z "$one" ] || [ -z "$many" ]; then
    cat "$work/pgbench.err" >&2
    exit 1
  fi
  printf '| %s | %.0f | %.0f | %.2f |\n' "$c" "$one" "$many" "$(awk -v a="$one" -v b="$many" 'BEGIN { print a / b }')"
done
