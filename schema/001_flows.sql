-- flowgate.flows: one row per flow per drain interval (DESIGN.md, "Public contracts").
--
-- Migrations are applied in file order and recorded in flowgate.schema_migrations.
-- Each statement ends with ';' at the end of a line and must be safe to run
-- again (IF NOT EXISTS): a crash mid-file, or two agents starting at once,
-- runs the file again. {retention_days} and the other {names} are filled in
-- from StoreOptions (control/store/migrate.ts); the agent re-applies the TTLs
-- at every start, so changing --retention needs no new migration.

CREATE DATABASE IF NOT EXISTS flowgate;

-- Column order: the contract's columns as DESIGN.md lists them, then extras.
-- - PARTITION BY day: TTL drops whole days (ttl_only_drop_parts), and a time
--   range prunes partitions before anything is read.
-- - ORDER BY hour, then source and destination: the cookbook's questions are
--   "this time range" plus "this address"; within an hour, rows of one
--   source sit together. dst_addr gets a bloom filter for "who talked to X".
-- - Times are close together within a granule: Delta + ZSTD. Counters are
--   small numbers in wide types: T64 + ZSTD.
-- - non_replicated_deduplication_window: insert_deduplication_token works on
--   a plain MergeTree, so a retried batch lands once.
CREATE TABLE IF NOT EXISTS flowgate.flows
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
    -- Extras. inner_vlan: the C-tag of a double-tagged (QinQ) frame, 0 = none.
    inner_vlan      UInt16 CODEC(ZSTD(1)),
    -- tcp_flags is the contract's 8 bits (FIN..CWR); the ninth flag bit
    -- (NS, now AE for accurate ECN) is kept here, 0 or 1.
    tcp_flags_ns    UInt8,
    INDEX dst_addr_bloom dst_addr TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX dst_port_set dst_port TYPE set(1024) GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toDate(first_seen)
ORDER BY (toStartOfHour(first_seen), src_addr, dst_addr)
TTL toDateTime(first_seen) + toIntervalDay({retention_days})
SETTINGS non_replicated_deduplication_window = 10000,
         ttl_only_drop_parts = 1,
         materialize_ttl_recalculate_only = 1;
