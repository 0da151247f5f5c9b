{#-
  One row per visitor seen before as_of: first and last event, event counts by type,
  sessions, and a segment. Segments (first match wins):
    heavy       at least var heavy_user_min_events (default 200) events on one UTC day
                (bot-like);
    converting  at least one transaction;
    browsing    more than one session, no transaction (a returning visitor);
    new         a single session, no transaction (a first visit).

  Built from fct_sessions (1.8M sessions, stored in (user_id, session_start) order), not
  from the 2.7M events: the sessions are already folded there, so one sorted aggregation
  folds them into visitors (the events' copy of that fold cost ~4 s of the full build).
  Only visitors with at least heavy_user_min_events events in all can be heavy, so the
  per-day counts are computed for those few only, through the (user_id, event_ts) index
  of int_events_sessionized.

  Incremental: only the visitors with events from new load batches are recomputed
  (delete+insert by user_id), from their sessions (one range scan of fct_sessions'
  (user_id, session_start) index each).
-#}
{{
  config(
    materialized='incremental',
    incremental_strategy='delete_insert_analyzed',
    unique_key='user_id',
    on_schema_change='append_new_columns',
    contract={'enforced': true},
    indexes=[
      {'columns': ['user_id'], 'unique': true},
      {'columns': ['segment']},
    ],
    pre_hook=["{{ aisle_full_build_settings(prefer_sort=true) }}"],
  )
}}

{%- set heavy_min = var('heavy_user_min_events', 200) -%}
{%- if heavy_min is none or (heavy_min | string) | trim == '' or (heavy_min | int) < 1 -%}
  {{ exceptions.raise_compiler_error("var heavy_user_min_events must be a positive integer, got: " ~ heavy_min) }}
{%- endif %}

with

{% if is_incremental() %}
changed_users as (

    select distinct events.user_id
    from {{ ref('int_events_sessionized') }} as events
    where events.batch_id > (select coalesce(max(last_batch_id), 0) from {{ this }})

),

sessions as (

    select user_sessions.*
    from changed_users
    -- lateral: one range scan of the (user_id, session_start) index per visitor (`offset 0`
    -- keeps it apart; flattened, it is planned as a hash join over a full scan)
    cross join lateral (
        select *
        from {{ ref('fct_sessions') }} as visitor_sessions
        where visitor_sessions.user_id = changed_users.user_id
        offset 0
    ) as user_sessions

),
{% else %}
sessions as (

    select * from {{ ref('fct_sessions') }}

),
{% endif %}

per_user as (

    select
        user_id,
        min(session_start) as first_seen_ts,
        max(session_end) as last_seen_ts,
        sum(n_events)::bigint as n_events,
        sum(n_views)::bigint as n_views,
        sum(n_carts)::bigint as n_carts,
        sum(n_purchases)::bigint as n_purchases,
        count(*)::bigint as n_sessions,
        count(*) filter (where is_converted)::bigint as n_converted_sessions,
        max(last_batch_id) as last_batch_id
    from sessions
    group by user_id

),

heavy_candidates as (

    select user_id
    from per_user
    where n_events >= {{ heavy_min | int }}

),

-- Per-day counts for the few candidates only: one index range scan each.
candidate_days as (

    select
        heavy_candidates.user_id,
        days.event_date,
        days.n_events
    from heavy_candidates
    cross join lateral (
        select
            events.event_date,
            count(*) as n_events
        from {{ ref('int_events_sessionized') }} as events
        where events.user_id = heavy_candidates.user_id
        group by events.event_date
    ) as days

),

per_user_max_day as (

    select
        user_id,
        max(n_events)::bigint as max_events_per_day
    from candidate_days
    group by user_id

),

final as (

    select
        per_user.user_id,
        per_user.first_seen_ts,
        per_user.last_seen_ts,
        per_user.n_events,
        per_user.n_views,
        per_user.n_carts,
        per_user.n_purchases,
        per_user.n_sessions,
        per_user.n_converted_sessions,
        per_user.n_purchases > 0 as has_purchased,
        coalesce(per_user_max_day.max_events_per_day, 0) >= {{ heavy_min | int }} as is_heavy,
        case
            when coalesce(per_user_max_day.max_events_per_day, 0) >= {{ heavy_min | int }} then 'heavy'
            when per_user.n_purchases > 0 then 'converting'
            when per_user.n_sessions > 1 then 'browsing'
            else 'new'
        end as segment,
        per_user.last_batch_id
    from per_user
    left join per_user_max_day
        on per_user.user_id = per_user_max_day.user_id

)

select * from final
