{#-
  Events, typed and cleaned: epoch ms -> timestamptz UTC, columns renamed, only finished
  load batches, only events before as_of, exact duplicates removed.

  Exact duplicates (same timestamp, visitor, event, item and transaction) become one
  event that keeps its first copy by (batch_id, line_no); n_copies counts the raw rows
  merged into it (stg_retailrocket__event_duplicates lists the events with more than
  one) and last_batch_id is the latest batch holding a copy (the incremental
  watermark). event_id is a 64-bit hash of that natural key, so the same event always
  gets the same id, whatever batch it comes in; a unique index and a unique test prove
  there is no collision.

  One sorted aggregation does the dedup, and writes the rows in (user_id, event_ts,
  event_id) order, the order sessionization sorts by, so that sort finds them sorted.
  The first copy is the min of batch_id * 2^32 + line_no (files have far fewer than 2^32
  lines), decoded afterwards.

  A table, not a view: several models and tests read it. Incremental by load batch: a
  run reads only the batches loaded since the last run; an event already staged from
  an earlier batch keeps its first copy and only counts the new ones. A batch replaced
  with `aisle load --replace` needs `dbt build --full-refresh` (test
  test_events_reconcile_with_raw fails until then).
-#}
{{
  config(
    materialized='incremental',
    incremental_strategy='delete_insert_analyzed',
    unique_key='event_id',
    unlogged=true,
    indexes=[{'columns': ['event_id'], 'unique': true}],
    pre_hook=["{{ aisle_full_build_settings() }}"],
  )
}}

{#- The batches staged so far, read once: a constant lets Postgres prune the old
    batches' partitions of raw.events when it plans the query. -#}
{%- set watermark = 0 -%}
{%- if execute and is_incremental() -%}
  {%- set watermark = run_query("select coalesce(max(last_batch_id), 0) from " ~ this).columns[0].values()[0] -%}
{%- endif %}

with

batches as (

    select batch_id
    from {{ source('retailrocket', 'load_batches') }}
    where file_kind = 'events'
        and status = 'finished'
        and batch_id > {{ watermark }}

),

source as (

    select
        events.batch_id,
        events.line_no,
        events."timestamp",
        events.visitorid,
        events.event,
        events.itemid,
        events.transactionid
    from {{ source('retailrocket', 'events') }} as events
    inner join batches
        on events.batch_id = batches.batch_id
    where events.batch_id > {{ watermark }}

),

typed as (

    select
        visitorid as user_id,
        {{ aisle_epoch_ms_to_timestamptz('"timestamp"') }} as event_ts,
        {{ aisle_hash64(bigints=['"timestamp"', 'visitorid', 'itemid', 'transactionid'], texts=['event']) }} as event_id,
        event as event_type,
        itemid as item_id,
        transactionid as transaction_id,
        batch_id,
        line_no
    from source

),

before_as_of as (

    select *
    from typed
    where {{ aisle_before_as_of('event_ts') }}

),

deduplicated as (

    select
        user_id,
        event_ts,
        event_id,
        event_type,
        item_id,
        transaction_id,
        min(batch_id * 4294967296 + line_no) as first_copy,
        count(*) as n_copies,
        max(batch_id) as last_batch_id
    from before_as_of
    group by user_id, event_ts, event_id, event_type, item_id, transaction_id

),

{% if is_incremental() %}
-- An event staged from an earlier batch keeps its first copy and adds the new copies.
merged as (

    select
        deduplicated.user_id,
        deduplicated.event_ts,
        deduplicated.event_id,
        deduplicated.event_type,
        deduplicated.item_id,
        deduplicated.transaction_id,
        coalesce(staged.batch_id * 4294967296 + staged.line_no, deduplicated.first_copy) as first_copy,
        coalesce(staged.n_copies, 0) + deduplicated.n_copies as n_copies,
        deduplicated.last_batch_id
    from deduplicated
    left join {{ this }} as staged
        on deduplicated.event_id = staged.event_id
        and deduplicated.event_ts = staged.event_ts
        and deduplicated.user_id = staged.user_id
        and deduplicated.event_type = staged.event_type
        and deduplicated.item_id = staged.item_id
        and deduplicated.transaction_id is not distinct from staged.transaction_id

),
{% else %}
merged as (

    select * from deduplicated

),
{% endif %}

final as (

    select
        event_id,
        event_ts,
        user_id,
        item_id,
        event_type,
        transaction_id,
        first_copy / 4294967296 as batch_id,
        first_copy % 4294967296 as line_no,
        n_copies,
        last_batch_id
    from merged
    order by user_id, event_ts, event_id

)

select * from final
