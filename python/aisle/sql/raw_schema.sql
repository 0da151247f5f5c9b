-- Schema raw: written only by `aisle load`. Column names follow the RetailRocket
-- files; staging renames and types them. Every row keeps its batch and line number,
-- so any raw row can be traced to the file line it came from.
--
-- The three data tables are LIST-partitioned by batch_id: the loader COPYs each file
-- into a new table raw.<table>_b<batch_id> created in the load's own transaction (with
-- wal_level=minimal that write skips the WAL), then ATTACHes it. Readers see only the
-- parent tables. `--replace` drops the old batch's partition instead of deleting rows.
-- The DEFAULT partitions only catch rows inserted by hand (test fixtures); the loader
-- never writes to them.
create schema if not exists raw;

-- One row per loaded file. rows_read = rows_loaded + rows_rejected, always.
create table if not exists raw.load_batches (
    batch_id        bigint generated always as identity primary key,
    file_name       text        not null,  -- base name, e.g. events.csv.gz
    file_path       text        not null,  -- absolute path at load time
    file_kind       text        not null check (file_kind in ('events', 'item_properties', 'category_tree')),
    sha256          text        not null,
    size_bytes      bigint      not null,
    rows_read       bigint,
    rows_loaded     bigint,
    rows_rejected   bigint,
    rows_summarized bigint      not null default 0,  -- item_properties rows kept only as counts (included in rows_loaded)
    started_at      timestamptz not null,
    finished_at     timestamptz,
    status          text        not null check (status in ('finished', 'replaced')),
    check (status <> 'finished' or rows_read = rows_loaded + rows_rejected)
);
create index if not exists load_batches_sha256 on raw.load_batches (sha256);

-- Quarantine: every rejected line with the reason, never silently dropped.
create table if not exists raw.load_rejects (
    batch_id bigint not null references raw.load_batches (batch_id),
    line_no  bigint not null,  -- 1-based physical line in the file; the header is line 1
    raw_line text   not null,  -- the line as read (bad UTF-8 bytes replaced by U+FFFD)
    reason   text   not null,
    primary key (batch_id, line_no)
);

create table if not exists raw.events (
    batch_id      bigint not null references raw.load_batches (batch_id),
    line_no       bigint not null,
    "timestamp"   bigint not null,  -- epoch milliseconds, UTC
    visitorid     bigint not null,
    event         text   not null check (event in ('view', 'addtocart', 'transaction')),
    itemid        bigint not null,
    transactionid bigint
) partition by list (batch_id);
create table if not exists raw.events_default partition of raw.events default;

-- Only the two properties in the clear (categoryid, available) are kept as rows;
-- the hashed ones are counted per property in raw.item_property_counts.
create table if not exists raw.item_properties (
    batch_id    bigint not null references raw.load_batches (batch_id),
    line_no     bigint not null,
    "timestamp" bigint not null,
    itemid      bigint not null,
    property    text   not null check (property in ('categoryid', 'available')),
    value       text   not null
) partition by list (batch_id);
create table if not exists raw.item_properties_default partition of raw.item_properties default;

create table if not exists raw.item_property_counts (
    batch_id bigint not null references raw.load_batches (batch_id),
    property text   not null,
    n_rows   bigint not null,
    primary key (batch_id, property)
);

create table if not exists raw.category_tree (
    batch_id   bigint not null references raw.load_batches (batch_id),
    line_no    bigint not null,
    categoryid bigint not null,
    parentid   bigint
) partition by list (batch_id);
create table if not exists raw.category_tree_default partition of raw.category_tree default;
