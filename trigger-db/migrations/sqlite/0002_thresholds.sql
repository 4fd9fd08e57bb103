-- Link_Configure_Thresholds configuration, kept across restarts.
-- scope: "if:<name>" or "lt:<trigger.v1.LinkType number>".
CREATE TABLE thresholds (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    scope      TEXT    NOT NULL,
    parameter  INTEGER NOT NULL,   -- trigger.v1.LinkParameterType
    value      REAL    NOT NULL,
    direction  INTEGER NOT NULL,   -- trigger.v1.ThresholdDirection
    hysteresis REAL    NOT NULL,
    one_shot   INTEGER NOT NULL,
    spent      INTEGER NOT NULL DEFAULT 0,
    UNIQUE (scope, parameter, value, direction)
);
