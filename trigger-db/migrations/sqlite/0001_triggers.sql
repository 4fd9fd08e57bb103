-- Every trigger ever stored. `body` is the trigger.v1.Trigger protobuf
-- (without its id); the other columns are what queries filter and sort on.
-- AUTOINCREMENT: ids are never reused, even after deletes, so a subscriber's
-- resume-after id stays meaningful.
CREATE TABLE triggers (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    observed_at INTEGER NOT NULL,   -- nanoseconds since the Unix epoch
    source      INTEGER NOT NULL,   -- trigger.v1.Source
    type        INTEGER NOT NULL,   -- trigger.v1.TriggerType
    if_name     TEXT,
    if_index    INTEGER,
    body        BLOB NOT NULL
);

-- The history queries admins run: by interface and time, by type and time,
-- by time alone. SQLite appends the rowid (id) to each index entry, so
-- (x, observed_at) orders by (x, observed_at, id): the history page order.
CREATE INDEX triggers_if_time ON triggers (if_name, observed_at);
CREATE INDEX triggers_type_time ON triggers (type, observed_at);
CREATE INDEX triggers_time ON triggers (observed_at);
