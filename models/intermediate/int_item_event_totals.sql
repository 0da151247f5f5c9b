{{
  config(
    materialized='table',
    unlogged=true,
    pre_hook=["{{ aisle_serial_plan() }}"],
  )
}}

{#- Per item, the sums that rec_item_popularity and rec_item_trending rank: both aggregate
    every staged event before as_of by item, so one pass (one sort by item and visitor,
    for the distinct visitors) serves both, and the marts read these 233K rows instead of
    the 2.7M events. The popularity columns cover the popularity window (the var
    popularity_window_days before the anchor; null = all history before as_of), the
    trending columns every event before as_of; the anchor is as_of, or the latest event
    when as_of is unset (never now()). The scores are exact sums (aisle_exact_sum), the
    same values as summing in the marts. The events come from the staged events (the
    same rows as fct_events: neither mart needs sessions nor the category at event time),
    so this builds while int_events_sessionized is being built, not after it. -#}
{%- set window_days = var('popularity_window_days', none) -%}
{%- set has_window = window_days is not none and (window_days | string) | trim != '' -%}
{%- if has_window and (window_days | float) <= 0 -%}
  {{ exceptions.raise_compiler_error("var popularity_window_days must be a positive number of days or null, got: " ~ window_days) }}
{%- endif -%}
{%- set half_life_days = aisle_half_life_days('trending_half_life_days') -%}

{#- For the build order only (this model reads no availability): dbt starts the ready
    model of the lowest depth first, so at its own depth this model took the free thread
    when int_events_sessionized (the longest model, the start of the critical path) was
    ready too, and the sessionization waited. After int_item_availability_history it is
    ready only once the sessionization has started, and runs on the other thread. -#}

-- depends_on: {{ ref('int_item_availability_history') }}

with

events as (

    select
        item_id,
        user_id,
        event_type,
        event_ts
    from {{ ref('stg_retailrocket__events') }}
    where {{ aisle_before_as_of('event_ts') }}

),

anchor as (

    select {{ aisle_anchor_ts(ref('stg_retailrocket__events')) }} as anchor_ts

),

weights as (

    {{ aisle_event_weights_row(ref('event_weights')) }}

),

{%- set in_window = 'events.event_ts >= anchor.anchor_ts - ' ~ (window_days | float) ~ " * interval '1 day'" if has_window else none %}

per_item as (

    select
        events.item_id,
        {#- outside the window a term is 0: the same integer sum as leaving the row out -#}
        {{ aisle_exact_sum(
            ('case when ' ~ in_window ~ ' then ' ~ aisle_event_weight('events.event_type') ~ ' else 0::double precision end')
            if in_window else aisle_event_weight('events.event_type')
        ) }} as popularity_weighted_events,
        count(distinct events.user_id){% if in_window %} filter (where {{ in_window }}){% endif %} as popularity_n_users,
        count(*){% if in_window %} filter (where {{ in_window }}){% endif %} as popularity_n_events,
        {{ aisle_exact_sum(
            aisle_event_weight('events.event_type') ~ ' * '
            ~ aisle_decay_factor('events.event_ts', 'anchor.anchor_ts', half_life_days)
        ) }} as trending_score,
        count(*) as n_events,
        max(events.event_ts) as last_event_ts
    from events
    cross join anchor
    cross join weights
    group by events.item_id

),

final as (

    select
        item_id::bigint as item_id,
        popularity_weighted_events::double precision as popularity_weighted_events,
        popularity_n_users::bigint as popularity_n_users,
        popularity_n_events::bigint as popularity_n_events,
        trending_score::double precision as trending_score,
        n_events::bigint as n_events,
        last_event_ts::timestamptz as last_event_ts
    from per_item

)

select * from final
