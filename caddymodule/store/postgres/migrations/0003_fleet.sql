-- Key events: every create and delete takes the next number of a gapless
-- counter inside its own transaction (a row lock, so a rolled-back change
-- uses no number), is kept for instances catching up after an outage, and
-- is announced with NOTIFY keygate_key_events when it commits.
create table key_event_seq (
    only_row boolean primary key default true check (only_row),
    value    bigint not null
);
insert into key_event_seq (value) values (0);

create table key_events (
    seq    bigint primary key,
    op     text not null check (op in ('create', 'delete')),
    digest bytea not null check (octet_length(digest) = 32),
    at     timestamptz not null
);

-- Each running keygate reports itself here: the dashboard's revocation
-- receipts and fleet panel read it.
create table instances (
    id           text primary key,
    address      text not null,
    listener_up  boolean not null,
    applied_seq  bigint not null,
    applied_at   timestamptz,
    started_at   timestamptz not null,
    heartbeat_at timestamptz not null
);
