{#-
  One row per session (from int_events_sessionized, the table behind fct_events):
  visitor, start and end (first and last event time), duration, event counts by type,
  distinct items and categories (category as of the event time, the unknown bucket
  counting as one), and whether the session converted (has at least one transaction).
  last_batch_id is the latest load batch that contributed an event (lineage, and the
  incremental watermark).

  Incremental: for each visitor with events from new batches, the sessions from the
  earliest session holding a new event on are rebuilt (strategy replace_tail), which
  also removes sessions that a new event merged into an earlier one.
-#}
{{
  config(
    materialized='incremental',
    on_schema_change='append_new_columns',
    incremental_strategy='replace_tail',
    tail_partition_by='user_id',
    tail_order_by='session_start',
    contract={'enforced': true},
    indexes=[
      {'columns': ['session_id'], 'unique': true},
      {'columns': ['user_id', 'session_start']},
    ],
    pre_hook=["{{ aisle_full_build_settings(prefer_sort=true, sequential_scans=true) }}"],
  )
}}

with

{% if is_incremental() %}
processed as (

    select coalesce(max(last_batch_id), 0) as max_batch_id
    from {{ this }}

),

tails as (

    select
        new_events.user_id,
        min(new_events.session_start_ts) as tail_start_ts
    from {{ ref('int_events_sessionized') }} as new_events
    -- a scalar watermark, so that the BRIN index on batch_id selects the new rows' blocks
    where new_events.batch_id > (select max_batch_id from processed)
    group by new_events.user_id

),

events as (

    select
        sessionized.session_id,
        sessionized.session_start_ts,
        sessionized.user_id,
        sessionized.event_ts,
        sessionized.event_type,
        sessionized.item_id,
        sessionized.category_id,
        sessionized.batch_id
    from tails
    -- lateral: one range scan of the (user_id, event_ts) index per visitor (`offset 0` keeps
    -- it apart; flattened, it is planned as a hash join over a full scan of the events)
    cross join lateral (
        select *
        from {{ ref('int_events_sessionized') }} as events
        where events.user_id = tails.user_id
            and events.event_ts >= tails.tail_start_ts
        offset 0
    ) as sessionized

),
{% else %}
events as (

    select
        session_id,
        session_start_ts,
        user_id,
        event_ts,
        event_type,
        item_id,
        category_id,
        batch_id
    from {{ ref('int_events_sessionized') }}

),
{% endif %}

sessions as (

    select
        session_id,
        user_id,
        session_start_ts as session_start,
        max(event_ts) as session_end,
        count(*) as n_events,
        count(*) filter (where event_type = 'view') as n_views,
        count(*) filter (where event_type = 'addtocart') as n_carts,
        count(*) filter (where event_type = 'transaction') as n_purchases,
        count(distinct item_id) as n_distinct_items,
        count(distinct category_id) as n_distinct_categories,
        max(batch_id) as last_batch_id
    from events
    -- int_events_sessionized is stored in this order: the sort finds sorted input.
    group by user_id, session_start_ts, session_id

),

final as (

    select
        session_id,
        user_id,
        session_start,
        session_end,
        extract(epoch from session_end - session_start)::numeric(12, 3) as duration_seconds,
        n_events,
        n_views,
        n_carts,
        n_purchases,
        n_distinct_items::integer as n_distinct_items,
        n_distinct_categories::integer as n_distinct_categories,
        n_purchases > 0 as is_converted,
        last_batch_id
    from sessions
    order by user_id, session_start

)

select * from final
