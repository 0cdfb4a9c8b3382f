-- A key's page lists the events about that key (ListAudit with KeyID):
-- a handful among an account's thousands.
create index audit_events_account_key_idx on audit_events (account_id, key_id, id desc);
