-- Which secret made each key's digest and sealed copy, by fingerprint (a
-- value derived from the secret for this purpose alone). Keys stored
-- before have none until an instance proves which secret made them.
alter table api_keys add column secret text check (secret <> '');
-- A rotation pages through the keys of one secret; start-up asks whether
-- any key of a secret is left.
create index api_keys_secret_idx on api_keys (secret, id);

-- The secrets the store's keys were made with, and the one new keys are
-- made with (current): an instance whose secrets do not cover them is
-- refused, and a missing secret is an error, never a silent new one.
create table keygate_secrets (
    fingerprint text primary key check (fingerprint <> ''),
    current     boolean not null default false,
    added_at    timestamptz not null
);
create unique index keygate_secrets_current_idx on keygate_secrets (current) where current;

-- A deletion is applied by key id: a key may be cached under a digest
-- other than the one stored (made with a previous secret).
alter table key_events add column key_id text;

-- The fingerprints of the secrets each instance has: a rotation makes a
-- secret current only when every live instance has it.
alter table instances add column secrets text[] not null default '{}';

-- What an event about no one key did (a rotation).
alter table audit_events add column detail text not null default '';
