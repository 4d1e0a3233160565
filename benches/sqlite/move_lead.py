"""The statements of one MoveLead transaction, run straight against SQLite: the ceiling that
MoveLead on the embedded backend is measured against (benches/sqlite-move.sh).

Same statements, in the same order, as src/app/leads.rs `move_lead` sends on SQLite (and as
benches/pgbench/move_lead.sql sends on PostgreSQL): read the lead, read its pipeline, update the
lead under its version, take the tenant's next sequence, append the history and outbox rows,
commit. One connection, as the service has one writer; WAL and the given `synchronous`.

    python3 benches/sqlite/move_lead.py DB_FILE SECONDS LEADS full|normal
"""

import random
import sqlite3
import sys
import time

PAYLOAD = '{"change":{},"lead":{"pad":"%s"}}' % ("0" * 1100)


def main():
    path, seconds, leads, synchronous = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    db.execute("PRAGMA foreign_keys = ON")
    rng = random.Random(7)
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lead_id = f"lead-{rng.randint(1, leads)}"
        now = int(time.time() * 1_000_000)
        db.execute("BEGIN")
        lead = db.execute(
            "SELECT tenant_id, id, title, company, contact_name, contact_email, owner, source,"
            " pipeline_id, stage, amount_currency, amount_units, amount_nanos, budget_currency,"
            " budget_units, budget_nanos, bant_authority, bant_need, bant_timeline,"
            " expected_close_time, labels, lost_reason, win_probability, expected_value,"
            " create_time, update_time, stage_enter_time, close_time, version, external_id"
            " FROM leads WHERE tenant_id = ? AND id = ? LIMIT ?",
            ("bench", lead_id, 1),
        ).fetchone()
        db.execute(
            "SELECT version FROM pipelines WHERE tenant_id = ? AND id = ? LIMIT ?",
            ("bench", "default", 1),
        ).fetchone()
        stage, version = lead[9], lead[28]
        to_stage = "lead_generation" if stage == "qualification" else "qualification"
        db.execute(
            "UPDATE leads SET title = ?, company = ?, contact_name = ?, contact_email = ?,"
            " owner = ?, source = ?, pipeline_id = ?, stage = ?, amount_currency = ?,"
            " amount_units = ?, amount_nanos = ?, budget_currency = ?, budget_units = ?,"
            " budget_nanos = ?, bant_authority = ?, bant_need = ?, bant_timeline = ?,"
            " expected_close_time = ?, labels = ?, lost_reason = ?, win_probability = ?,"
            " expected_value = ?, update_time = ?, stage_enter_time = ?, close_time = ?,"
            " version = ? WHERE tenant_id = ? AND id = ? AND version = ?",
            (lead[2], lead[3], lead[4], lead[5], lead[6], lead[7], "default", to_stage, "EUR",
             lead[11], 0, "", 0, 0, "", "", None, None, "{}", "", 0.2, 200.0, now, now, None,
             version + 1, "bench", lead_id, version),
        )
        (sequence,) = db.execute(
            "INSERT INTO tenant_sequences (tenant_id, last_sequence) VALUES (?, ?)"
            " ON CONFLICT (tenant_id) DO UPDATE SET"
            " last_sequence = tenant_sequences.last_sequence + ? RETURNING last_sequence",
            ("bench", 1, 1),
        ).fetchone()
        db.execute(
            "INSERT INTO stage_changes (tenant_id, sequence, lead_id, pipeline_id, from_stage,"
            " to_stage, change_time, actor, note, imported) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("bench", sequence, lead_id, "default", stage, to_stage, now, "anonymous", "", False),
        )
        db.execute(
            "INSERT INTO outbox (tenant_id, sequence, lead_id, pipeline_id, to_stage, owner,"
            " change_time, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("bench", sequence, lead_id, "default", to_stage, lead[6], now, PAYLOAD),
        )
        db.execute("COMMIT")
        done += 1
    print(f"{done / seconds:.1f}")


if __name__ == "__main__":
    main()
