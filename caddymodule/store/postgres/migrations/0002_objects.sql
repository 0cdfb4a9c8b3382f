-- Attachments and previews: which server each belongs to, as seen in the
-- inbox API's responses. Rows expire with the retention (PurgeObjects).
create table objects (
    account_id text not null,
    kind       text not null check (kind in ('attachment', 'preview')),
    id         text not null,
    server_id  text not null,
    seen_at    timestamptz not null,
    primary key (account_id, kind, id)
);

create index objects_seen_at_idx on objects (seen_at);
