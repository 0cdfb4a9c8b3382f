-- What each key did, per hour (RecordActivity): requests let through and
-- refused by the key's scope, and the hour's client addresses, agents and
-- servers with their requests, at most store.ActivityCap of each kind per
-- key and hour (the requests of the others are counted in other_*). Rows
-- go with their key, and after activity_retention (PurgeActivity). Hours
-- are integer microseconds, like every time here.
create table key_activity (
    key_id          text not null references api_keys (id) on delete cascade,
    hour            integer not null,
    allowed         integer not null check (allowed >= 0),
    refused         integer not null check (refused >= 0),
    other_addresses integer not null check (other_addresses >= 0),
    other_agents    integer not null check (other_agents >= 0),
    other_servers   integer not null check (other_servers >= 0),
    primary key (key_id, hour)
) strict;

-- PurgeActivity deletes by hour.
create index key_activity_hour_idx on key_activity (hour);

create table key_activity_values (
    key_id   text not null,
    hour     integer not null,
    kind     text not null check (kind in ('address', 'agent', 'server')),
    value    text not null,
    requests integer not null check (requests > 0),
    primary key (key_id, hour, kind, value),
    foreign key (key_id, hour) references key_activity (key_id, hour) on delete cascade
) strict;
