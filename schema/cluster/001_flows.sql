-- flowgate.flows on a ClickHouse cluster: the cluster twin of ../001_flows.sql
-- (`flowgate run --clickhouse-url … --clickhouse-cluster <name>`).
--
-- Every table of ../ becomes two here:
-- - <table>_local: the rows of one shard, a Replicated*MergeTree with the
--   same columns, codecs, keys, TTL and settings as the single-node table.
--   Its replication path is /clickhouse/tables/{shard}/flowgate/<table> and
--   its replica name {replica}: ClickHouse fills those two from each
--   server's <macros>, so they stay literal here.
-- - <table>: a Distributed table over the <table>_local of every shard, so
--   the agent, the API and the cookbook keep writing and reading
--   flowgate.<table> unchanged.
-- Every statement runs ON CLUSTER '{cluster}': {cluster} is filled in by the
-- agent from --clickhouse-cluster (control/store/migrate.ts) before the
-- statement is sent; {retention_days} and the rest as in ../.
-- The statements are idempotent (IF NOT EXISTS), like ../: a migration that
-- half-ran, or that two agents apply at once, runs again.

CREATE DATABASE IF NOT EXISTS flowgate ON CLUSTER '{cluster}';

-- As ../001_flows.sql, except the engine and the deduplication window:
-- replicated tables deduplicate inserts through Keeper
-- (replicated_deduplication_window), not non_replicated_deduplication_window.
CREATE TABLE IF NOT EXISTS flowgate.flows_local ON CLUSTER '{cluster}'
(
    first_seen      DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    last_seen       DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    host            LowCardinality(String),
    iface           LowCardinality(String),
    direction       Enum8('ingress' = 1, 'egress' = 2),
    src_addr        IPv6 CODEC(ZSTD(1)),
    dst_addr        IPv6 CODEC(ZSTD(1)),
    src_port        UInt16 CODEC(ZSTD(1)),
    dst_port        UInt16 CODEC(ZSTD(1)),
    protocol        UInt8,
    vlan            UInt16 CODEC(ZSTD(1)),
    tcp_flags       UInt8,
    packets         UInt64 CODEC(T64, ZSTD(1)),
    bytes           UInt64 CODEC(T64, ZSTD(1)),
    dropped_packets UInt64 CODEC(T64, ZSTD(1)),
    dropped_bytes   UInt64 CODEC(T64, ZSTD(1)),
    rule_id         UInt32 CODEC(T64, ZSTD(1)),
    inner_vlan      UInt16 CODEC(ZSTD(1)),
    tcp_flags_ns    UInt8,
    INDEX dst_addr_bloom dst_addr TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX dst_port_set dst_port TYPE set(1024) GRANULARITY 4
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/flowgate/flows', '{replica}')
PARTITION BY toDate(first_seen)
ORDER BY (toStartOfHour(first_seen), src_addr, dst_addr)
TTL toDateTime(first_seen) + toIntervalDay({retention_days})
SETTINGS replicated_deduplication_window = 10000,
         ttl_only_drop_parts = 1,
         materialize_ttl_recalculate_only = 1;

-- Sharded by source address: all rows of one source land on one shard, so
-- "what did 10.0.0.5 do" reads one shard (optimize_skip_unused_shards), and
-- talkers_1h, filled from these rows on each shard, is sharded the same way.
-- A retried batch splits into the same per-shard blocks with the same
-- insert_deduplication_token, so each shard drops its part of a retry.
CREATE TABLE IF NOT EXISTS flowgate.flows ON CLUSTER '{cluster}' AS flowgate.flows_local
ENGINE = Distributed('{cluster}', flowgate, flows_local, cityHash64(src_addr));
