-- Times are integer microseconds since 1970 UTC: exact, and they sort.
-- STRICT tables reject values of the wrong type instead of converting them.

-- Accounts are the tenants: keys and members belong to one.
create table accounts (
    id         text not null primary key,
    name       text not null unique,
    created_at integer not null
) strict;

create table members (
    account_id text not null references accounts (id) on delete cascade,
    user_id    text not null,
    role       text not null check (role in ('admin', 'member')),
    created_at integer not null,
    primary key (account_id, user_id)
) strict;

-- MembershipsOf looks members up by user.
create index members_user_id_idx on members (user_id);

-- A key is never stored itself: digest finds it, sealed reveals it.
-- Deleting a key deletes its row, freeing its name and its sealed copy.
create table api_keys (
    id           text not null primary key,
    account_id   text not null references accounts (id),
    name         text not null,
    type         text not null check (type in ('standard', 'restricted')),
    server_id    text check (server_id <> ''),
    display      text not null,
    digest       blob not null unique check (length(digest) = 32),
    sealed       blob not null,
    created_at   integer not null,
    created_by   text not null,
    last_used_at integer,
    unique (account_id, name),
    -- A restricted key has exactly one server; a standard key has none.
    check ((type = 'restricted') = (server_id is not null))
) strict;

-- Audit rows outlive the keys they name, so they copy what they need and
-- reference nothing. AUTOINCREMENT: ids only grow, which paging relies on.
create table audit_events (
    id          integer primary key autoincrement,
    account_id  text not null,
    actor       text not null,
    action      text not null,
    key_id      text not null default '',
    key_name    text not null default '',
    key_display text not null default '',
    remote_addr text not null default '',
    at          integer not null
) strict;

-- ListAudit pages through one account's events, newest first.
create index audit_events_account_id_idx on audit_events (account_id, id desc);
