-- Link_Configure_Thresholds configuration of each host, kept across
-- restarts. scope: "if:<name>" or "lt:<trigger.v1.LinkType number>".
CREATE TABLE thresholds (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host       text             NOT NULL,
    scope      text             NOT NULL,
    parameter  integer          NOT NULL,   -- trigger.v1.LinkParameterType
    value      double precision NOT NULL,
    direction  integer          NOT NULL,   -- trigger.v1.ThresholdDirection
    hysteresis double precision NOT NULL,
    one_shot   boolean          NOT NULL,
    spent      boolean          NOT NULL DEFAULT false,
    UNIQUE (host, scope, parameter, value, direction)
);
