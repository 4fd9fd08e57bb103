-- Queries over several hosts, or all of them (Query with hosts or
-- all_hosts, triggerctl history --all-hosts): their page order is
-- (observed_at, host, id), host ids compared bytewise. This index is that
-- order, so the first page of every host in a time window is one index
-- range instead of a sort of the whole window.
CREATE INDEX triggers_time_host ON triggers (observed_at, host COLLATE "C", id);
