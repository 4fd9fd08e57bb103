-- trigger-db on PostgreSQL: roles and row-level security so that each
-- host's daemon writes only its own rows, and operators read every host's.
-- See docs/postgresql.md, "Roles and grants".
--
-- Run once in the trigger-db database as the schema's owner (the role the
-- first trigger-db ran with, which created the tables), after that first
-- start. It can be run again (after an upgrade, say): it changes nothing
-- that is already there. trigger-db/tests/store_hosts.rs runs this very
-- file against a real server.
--
-- The owner is not bound by the policies (it owns the tables and there is
-- no FORCE ROW LEVEL SECURITY): it runs the migrations and may repair
-- anything. Roles are per cluster; this file creates the two group roles
-- if they are not there yet.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'trigger_hosts') THEN
        -- Every host's login role is a member: read all, write own.
        CREATE ROLE trigger_hosts NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'trigger_readers') THEN
        -- Operators' login roles: read only.
        CREATE ROLE trigger_readers NOLOGIN;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO trigger_hosts, trigger_readers',
                   current_database());
END
$$;

-- Which login role writes which host id ([store] host_id). One row per
-- host; only the owner changes it.
CREATE TABLE IF NOT EXISTS host_roles (
    host text PRIMARY KEY,
    role name NOT NULL UNIQUE
);

GRANT USAGE ON SCHEMA public TO trigger_hosts, trigger_readers;
GRANT SELECT, INSERT, UPDATE, DELETE ON triggers, hosts, thresholds TO trigger_hosts;
GRANT SELECT ON _sqlx_migrations, host_roles TO trigger_hosts;
GRANT SELECT ON triggers, hosts, thresholds, _sqlx_migrations, host_roles TO trigger_readers;

ALTER TABLE triggers ENABLE ROW LEVEL SECURITY;
ALTER TABLE hosts ENABLE ROW LEVEL SECURITY;
ALTER TABLE thresholds ENABLE ROW LEVEL SECURITY;

-- Reading: every row, for anyone granted SELECT (a daemon answers Query
-- with --all-hosts; operators read everything). Writing (INSERT, UPDATE,
-- DELETE): only the rows of the host mapped to the current login role;
-- a role without a mapping writes nothing.
DROP POLICY IF EXISTS read_all ON triggers;
CREATE POLICY read_all ON triggers FOR SELECT USING (true);
DROP POLICY IF EXISTS write_own_host ON triggers;
CREATE POLICY write_own_host ON triggers FOR ALL TO trigger_hosts
    USING (host = (SELECT r.host FROM host_roles r WHERE r.role = current_user))
    WITH CHECK (host = (SELECT r.host FROM host_roles r WHERE r.role = current_user));

DROP POLICY IF EXISTS read_all ON hosts;
CREATE POLICY read_all ON hosts FOR SELECT USING (true);
DROP POLICY IF EXISTS write_own_host ON hosts;
CREATE POLICY write_own_host ON hosts FOR ALL TO trigger_hosts
    USING (host = (SELECT r.host FROM host_roles r WHERE r.role = current_user))
    WITH CHECK (host = (SELECT r.host FROM host_roles r WHERE r.role = current_user));

DROP POLICY IF EXISTS read_all ON thresholds;
CREATE POLICY read_all ON thresholds FOR SELECT USING (true);
DROP POLICY IF EXISTS write_own_host ON thresholds;
CREATE POLICY write_own_host ON thresholds FOR ALL TO trigger_hosts
    USING (host = (SELECT r.host FROM host_roles r WHERE r.role = current_user))
    WITH CHECK (host = (SELECT r.host FROM host_roles r WHERE r.role = current_user));

-- Then, per host (as the owner or a role that may create roles):
--   CREATE ROLE trigger_gw_paris_1 LOGIN PASSWORD '...' IN ROLE trigger_hosts;
--   INSERT INTO host_roles (host, role) VALUES ('gw-paris-1', 'trigger_gw_paris_1');
-- and per operator:
--   CREATE ROLE alice LOGIN PASSWORD '...' IN ROLE trigger_readers;
