-- The statements of one MoveLead transaction, as the service sends them (see
-- src/app/leads.rs `move_lead`): read the lead, share-lock its pipeline row, update the lead
-- under its version, take the tenant's next sequence, append the history row and the outbox row.
-- Leads alternate between lead_generation and qualification, as the load driver's `move` does.
-- Client k moves the leads of tenant `pgbench-(k mod :tenants)`: with tenants=1 every client
-- queues on one tenant's sequence row, as one tenant's callers do.
\set n random(1, :leads)
\set t :client_id % :tenants
BEGIN;
SELECT tenant_id, id, title, company, contact_name, contact_email, owner, source, pipeline_id,
       stage, amount_currency, amount_units, amount_nanos, budget_currency, budget_units,
       budget_nanos, bant_authority, bant_need, bant_timeline, expected_close_time, labels,
       lost_reason, win_probability, expected_value, create_time, update_time, stage_enter_time,
       close_time, version, external_id
  FROM leads WHERE tenant_id = 'pgbench-' || (:t)::text AND id = 'lead-' || (:n)::text LIMIT 1 \gset lead_
SELECT version FROM pipelines WHERE tenant_id = 'pgbench-' || (:t)::text AND id = 'default' LIMIT 1 FOR KEY SHARE;
UPDATE leads SET title = :lead_title, company = :lead_company,
       contact_name = :lead_contact_name, contact_email = :lead_contact_email,
       owner = :lead_owner, source = :lead_source, pipeline_id = 'default',
       stage = CASE WHEN :lead_stage = 'qualification' THEN 'lead_generation' ELSE 'qualification' END,
       amount_currency = 'EUR', amount_units = :lead_amount_units, amount_nanos = 0,
       budget_currency = '', budget_units = 0, budget_nanos = 0, bant_authority = '',
       bant_need = '', bant_timeline = NULL, expected_close_time = NULL, labels = '{}',
       lost_reason = '', win_probability = 0.2, expected_value = 200,
       update_time = (extract(epoch from clock_timestamp()) * 1000000)::bigint,
       stage_enter_time = (extract(epoch from clock_timestamp()) * 1000000)::bigint,
       close_time = NULL, version = :lead_version + 1
 WHERE tenant_id = 'pgbench-' || (:t)::text AND id = 'lead-' || (:n)::text AND version = :lead_version;
INSERT INTO tenant_sequences (tenant_id, last_sequence) VALUES ('pgbench-' || (:t)::text, 1)
    ON CONFLICT (tenant_id) DO UPDATE SET last_sequence = tenant_sequences.last_sequence + 1
    RETURNING last_sequence \gset
INSERT INTO stage_changes (tenant_id, sequence, lead_id, pipeline_id, from_stage, to_stage,
                           change_time, actor, note, imported)
     VALUES ('pgbench-' || (:t)::text, :last_sequence, 'lead-' || (:n)::text, 'default', :lead_stage, 'qualification',
             (extract(epoch from clock_timestamp()) * 1000000)::bigint, 'anonymous', '', false);
INSERT INTO outbox (tenant_id, sequence, lead_id, pipeline_id, to_stage, owner, change_time, payload)
     VALUES ('pgbench-' || (:t)::text, :last_sequence, 'lead-' || (:n)::text, 'default', 'qualification', :lead_owner,
             (extract(epoch from clock_timestamp()) * 1000000)::bigint, :payload);
END;
