-- ListKeys reads a page of an account's keys in order of name (ASCII
-- letters folded) or of creation, ties broken by id, either way, from
-- where a cursor left off. Text sorts in code point order ("C"), as in
-- every store. Last use is sorted instead: an index on last_used_at
-- would cost every TouchKeys its in-place (HOT) updates.
create index api_keys_account_name_idx on api_keys (account_id, lower(name collate "C"), id collate "C");
create index api_keys_account_created_idx on api_keys (account_id, created_at, id collate "C");

-- ListAudit reads the events of one action.
create index audit_events_account_action_idx on audit_events (account_id, action, id desc);
