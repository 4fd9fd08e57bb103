-- Every trigger of every host. A row is one host's trigger: `host` is the
-- daemon's host id ([store] host_id, default /etc/machine-id), `id` its
-- id on that host (strictly increasing per host, never reused). `body` is
-- the trigger.v1.Trigger protobuf (without its id); the other columns are
-- what queries filter and sort on.
CREATE TABLE triggers (
    host        text     NOT NULL,
    id          bigint   NOT NULL CHECK (id > 0),
    observed_at bigint   NOT NULL,   -- nanoseconds since the Unix epoch
    source      integer  NOT NULL,   -- trigger.v1.Source
    type        integer  NOT NULL,   -- trigger.v1.TriggerType
    if_name     text,
    if_index    bigint,
    body        bytea    NOT NULL,
    PRIMARY KEY (host, id)
);

-- The history queries of one host: by interface and time, by type and
-- time, by time alone, each ending in id so that the page order
-- (observed_at, id) is the index order. The same indexes serve several
-- hosts (host = ANY(...)) with one range scan per host.
CREATE INDEX triggers_host_if_time ON triggers (host, if_name, observed_at, id);
CREATE INDEX triggers_host_type_time ON triggers (host, type, observed_at, id);
CREATE INDEX triggers_host_time ON triggers (host, observed_at, id);

-- Per host: the highest id ever given or reserved. The writer moves it
-- ahead in a small transaction before it hands out ids from the range
-- (store::Writer::reserve_ids), so after a crash ids go on above anything
-- a subscriber was sent, and after deletes ids are never reused.
CREATE TABLE hosts (
    host        text     PRIMARY KEY,
    reserved_id bigint   NOT NULL DEFAULT 0 CHECK (reserved_id >= 0)
);
