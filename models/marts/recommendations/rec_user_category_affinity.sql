{{
  config(
    materialized='aisle_bulk_table',
    contract={'enforced': true},
    pre_hook=["{{ aisle_serial_plan() }}", "{{ aisle_full_build_settings(prefer_sort=true) }}"],
    indexes=[
      {'columns': ['user_id', 'category_id'], 'unique': true},
    ],
  )
}}

{#- User-category affinity, the input of the Python CF step (aisle similarity): per
    (visitor, category of the item at event time), the time-decayed weighted score
    sum of weight * 0.5 ^ (age / affinity_half_life_days), the raw counts per event type
    and the last interaction. The unknown-category bucket (-1) is left out: it says
    nothing about taste. At full scale this is ~1.6M rows, so it is kept lean:
    - one pass over the events, read from int_events_sessionized (the table behind
      fct_events, the same rows): this long model then starts as soon as the events are
      sessionized, ahead of the shorter daily aggregates, which read fct_events;
    - one sorted aggregate (with ~1.6M groups, Sort + GroupAggregate measured 3x faster
      than HashAggregate at full scale, and the rows come out in index order);
    - CREATE TABLE AS rather than dbt's CREATE TABLE + INSERT for a contracted table
      (materialization aisle_bulk_table, macros/recs_serving.sql);
    - one index, unique on the grain (user_id, category_id): a duplicate fails the
      build, and its leading user_id serves the per-visitor lookups and streaming. -#}
{%- set half_life_days = aisle_half_life_days('affinity_half_life_days') -%}

with

events as (

    select
        user_id,
        category_id,
        event_type,
        event_ts
    from {{ ref('int_events_sessionized') }}
    where {{ aisle_before_as_of('event_ts') }}
        and category_id <> -1

),

-- The latest event before as_of, read off dim_items' per-item last events (420K rows, built
-- while the events are sessionized): the same timestamp as max(event_ts) over the 2.7M
-- events, without a second full scan of them.
anchor as (

    select {{ aisle_anchor_ts(ref('dim_items'), column='last_event_ts') }} as anchor_ts

),

weights as (

    {{ aisle_event_weights_row(ref('event_weights')) }}

),

final as (

    select
        events.user_id::bigint as user_id,
        events.category_id::bigint as category_id,
        {{ aisle_exact_sum(
            aisle_event_weight('events.event_type') ~ ' * '
            ~ aisle_decay_factor('events.event_ts', 'anchor.anchor_ts', half_life_days)
        ) }}::double precision as affinity_score,
        (count(*) filter (where events.event_type = 'view'))::bigint as n_views,
        (count(*) filter (where events.event_type = 'addtocart'))::bigint as n_carts,
        (count(*) filter (where events.event_type = 'transaction'))::bigint as n_purchases,
        count(*)::bigint as n_events,
        max(events.event_ts)::timestamptz as last_event_ts
    from events
    cross join anchor
    cross join weights
    group by events.user_id, events.category_id

)

select * from final
