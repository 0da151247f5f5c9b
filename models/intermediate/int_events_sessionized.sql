{#-
  Staged events cut into sessions. Per visitor, in the order (event_ts, event_id), a new
  session starts at the first event and whenever the gap to the previous event is
  greater than var session_gap_minutes (strictly: a gap of exactly 30:00 stays in the
  session). session_id is a 64-bit hash of (user_id, session start time), so a session
  keeps its id when later events extend it, and every build gives the same ids.

  Each event also gets its item's category as of the event time (the
  int_item_category_history interval containing event_ts; before an item's first
  snapshot its earliest category; never categorized: the unknown bucket -1) and that
  category's root. This is the one physical event-grain table after staging: fct_events
  is a view over it, so the 2.7M events are not written twice. Rows are written in
  (user_id, event_ts, event_id) order (the order of the windows, the last step), which
  makes per-visitor and per-session aggregations downstream sort already sorted input.

  category_watermark records the category history and tree the categories came from
  (macro aisle_category_watermark): an incremental run after new property snapshots or
  a new tree stops with a message asking for --full-refresh, instead of leaving the
  categories of earlier events stale.

  Indexes: (user_id, event_ts) for the visitor timelines the incremental runs read,
  event_id (unique), and a BRIN index on batch_id for the watermark filter
  (batch_id > the latest batch already processed) of every incremental model downstream:
  the rows of a new batch go mostly to new blocks at the end of the table, so the block
  ranges written before hold only batches at or below the watermark and are skipped (a
  new row in an old range widens that range's summary: still correct, only less
  selective). A BRIN index costs one scan to build where a btree costs a 2.7M-row sort,
  on the critical path of the full build. (No item_id index: dim_items and the item
  marts read the staged events, not this table.)

  Incremental: a run processes only the events of batches not seen yet. For each visitor
  with new events it recomputes everything from the start of the session that was open
  just before the visitor's earliest new event (that start stays a session start: the
  gap before it is > the session gap and no new event precedes it), so a new event that
  extends, bridges or precedes a session, at any lookback, gives exactly the rows of a
  full refresh (proved by python/tests/test_warehouse_core.py).
-#}
{{
  config(
    materialized='incremental',
    incremental_strategy='replace_tail',
    tail_partition_by='user_id',
    tail_order_by='event_ts',
    unlogged=true,
    indexes=[
      {'columns': ['user_id', 'event_ts']},
      {'columns': ['event_id'], 'unique': true},
      {'columns': ['batch_id'], 'type': 'brin'},
    ],
    pre_hook=["{{ aisle_full_build_settings() }}"],
  )
}}

{{- aisle_require_current_categories('category_watermark') }}

with

{% if is_incremental() %}
processed as (

    select coalesce(max(batch_id), 0) as max_batch_id
    from {{ this }}

),

new_events as (

    select staged.*
    from {{ ref('stg_retailrocket__events') }} as staged
    where staged.batch_id > (select max_batch_id from processed)

),

new_users as (

    select
        user_id,
        min(event_ts) as first_new_ts
    from new_events
    group by user_id

),

-- Where each visitor's recomputation resumes: the start of the session of the visitor's
-- last already-sessionized event before the earliest new one (none: from the beginning).
resume_points as (

    select
        new_users.user_id,
        coalesce(previous.session_start_ts, '-infinity'::timestamptz) as resume_ts
    from new_users
    left join lateral (
        select sessionized.session_start_ts
        from {{ this }} as sessionized
        where sessionized.user_id = new_users.user_id
            and sessionized.event_ts < new_users.first_new_ts
        order by sessionized.event_ts desc
        limit 1
    ) as previous on true

),

events as (

    select
        sessionized.event_id,
        sessionized.event_ts,
        sessionized.user_id,
        sessionized.item_id,
        sessionized.event_type,
        sessionized.transaction_id,
        sessionized.batch_id
    from resume_points
    -- lateral: one range scan of the (user_id, event_ts) index per visitor. `offset 0` keeps
    -- the subquery apart: flattened, it was planned as a hash join over a full scan of the
    -- 2.7M sessionized events (0.5 s for the ~3K rows a day's increment resumes).
    cross join lateral (
        select *
        from {{ this }} as existing
        where existing.user_id = resume_points.user_id
            and existing.event_ts >= resume_points.resume_ts
        offset 0
    ) as sessionized

    union all

    select
        event_id,
        event_ts,
        user_id,
        item_id,
        event_type,
        transaction_id,
        batch_id
    from new_events

),
{% else %}
events as (

    select
        event_id,
        event_ts,
        user_id,
        item_id,
        event_type,
        transaction_id,
        batch_id
    from {{ ref('stg_retailrocket__events') }}

),
{% endif %}

category_history as (

    select
        item_id,
        category_id,
        valid_from,
        valid_to
    from {{ ref('int_item_category_history') }}

),

categories as (

    select
        category_id,
        root_category_id
    from {{ ref('int_category_paths') }}

),

-- The category as of the event time, joined before the windows: their sort then fixes
-- the order the rows are written in, whatever join plan Postgres picks.
categorized as (

    select
        events.*,
        coalesce(category_history.category_id, -1)::bigint as category_id,
        coalesce(categories.root_category_id, -1)::bigint as root_category_id
    from events
    {% if is_incremental() %}
    -- a few thousand events: one probe of the (item_id, valid_from) index each
    left join lateral (
        select history.category_id
        from {{ ref('int_item_category_history') }} as history
        where history.item_id = events.item_id
            and history.valid_from <= events.event_ts
        order by history.valid_from desc
        limit 1
    ) as category_history on true
    {% else %}
    left join category_history
        on events.item_id = category_history.item_id
        and events.event_ts >= category_history.valid_from
        and events.event_ts < category_history.valid_to
    {% endif %}
    left join categories
        on category_history.category_id = categories.category_id

),

gaps as (

    select
        *,
        lag(event_ts) over visitor_order as previous_event_ts,
        row_number() over visitor_order as visitor_event_no
    from categorized
    window visitor_order as (partition by user_id order by event_ts, event_id)

),

flagged as (

    select
        *,
        previous_event_ts is null
            or event_ts - previous_event_ts > {{ aisle_session_gap() }} as is_session_start
    from gaps

),

-- The running max of session starts (in the same window order, so no second sort): the
-- session an event belongs to started at the latest start so far.
assigned as (

    select
        *,
        max(case when is_session_start then event_ts end) over visitor_running as session_start_ts,
        max(case when is_session_start then visitor_event_no end) over visitor_running as session_first_no
    from flagged
    window visitor_running as (
        partition by user_id order by event_ts, event_id rows between unbounded preceding and current row
    )

),

final as (

    select
        event_id,
        event_ts,
        (event_ts at time zone 'UTC')::date as event_date,
        user_id,
        item_id,
        event_type,
        transaction_id,
        {{ aisle_hash64(bigints=['user_id', aisle_timestamptz_to_epoch_ms('session_start_ts')]) }} as session_id,
        session_start_ts,
        (visitor_event_no - session_first_no + 1)::integer as session_event_no,
        category_id,
        root_category_id,
        batch_id,
        {{ aisle_category_watermark() }} as category_watermark
    from assigned

)

select * from final
