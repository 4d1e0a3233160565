#!/usr/bin/env bash
# MoveLead through the service on SQLite versus the same SQL straight against SQLite (Python's
# sqlite3 on one connection, as the service has one writer), in one run. Prints one table of
# ratios per durability setting: the SQLite counterpart of benches/pgbench-move.sh.
#
#   bash benches/sqlite-move.sh                 # 1 and 16 clients, 10 s each, full and normal
#   CLIENTS="16" DURATION=5 SYNCHRONOUS=full bash benches/sqlite-move.sh
#
# Environment: CLIENTS, DURATION (seconds), LEADS (leads moved at random), SYNCHRONOUS (full
# and/or normal), SERVER_CPU / DRIVER_CPU (pinning; defaults 1 and 0 on machines with two or
# more CPUs). The direct SQL runs on the server's CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-1 16}
DURATION=${DURATION:-10}
LEADS=${LEADS:-1000}
SYNCHRONOUS=${SYNCHRONOUS:-full normal}
source benches/pin-cpus.sh

cargo build --release --quiet -p leadpipe -p leadpipe-bench --bins
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The schema is the service's own: its migrations, then leads seeded in SQL.
db="$work/move.db"
./target/release/leadpipe --database-url "sqlite://$db" migrate >/dev/null
python3 - "$db" "$LEADS" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN")
# Moves only read the pipeline row, so its definition does not matter here.
db.execute("INSERT INTO pipelines (tenant_id, id, display_name, definition, version, create_time,"
           " update_time) VALUES ('bench', 'default', 'Default', '{}', 1, 0, 0)")
db.executemany(
    "INSERT INTO leads (tenant_id, id, title, company, contact_name, owner, source, pipeline_id,"
    " stage, amount_currency, amount_units, win_probability, expected_value, create_time,"
    " update_time, stage_enter_time, version) VALUES ('bench', ?, ?, ?, ?, 'ana', 'web',"
    " 'default', 'lead_generation', 'EUR', 1000, 0.1, 100, 0, 0, 0, 1)",
    [(f"lead-{n}", f"bench mover {n}", f"Company {n}", f"Contact {n}")
     for n in range(1, int(sys.argv[2]) + 1)])
db.execute("COMMIT")
PY

for sync in $SYNCHRONOUS; do
  sql_tps=$("${pin_server[@]}" python3 benches/sqlite/move_lead.py "$db" "$DURATION" "$LEADS" "$sync")
  printf '\nsynchronous = %s\n\n' "$sync"
  printf '| clients | direct SQL TPS | MoveLead RPS | MoveLead ÷ direct SQL |\n|--:|--:|--:|--:|\n'
  for c in $CLIENTS; do
    ./target/release/leadpipe-bench --scenario move --clients "$c" --duration "${DURATION}s" \
      --warmup 1s --seed-leads "$LEADS" --sqlite-synchronous "$sync" "${pin_flags[@]}" \
      --json "$work/move.json" >"$work/bench.log" 2>&1 || { cat "$work/bench.log" >&2; exit 1; }
    rps=$(jq -r '[.cells[] | select(.scenario == "move")][0].throughput_rps' "$work/move.json")
    printf '| %s | %.0f | %.0f | %.2f |\n' "$c" "$sql_tps" "$rps" \
      "$(awk -v a="$rps" -v b="$sql_tps" 'BEGIN { print a / b }')"
  done
done
