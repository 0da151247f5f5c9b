{{
  config(
    materialized='incremental',
    incremental_strategy='delete_insert_analyzed',
    unique_key='item_id',
    unlogged=true,
    indexes=[{'columns': ['item_id'], 'unique': true}],
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
    so this builds while int_events_sessionized is being built, not after it.

    The trending sum is stored in a decay frame (trending_frame_score at decay_frame_ts: the
    anchor rounded down to a grid of 8 half-lives, macros/recs.sql), not at the anchor:
    rec_item_trending rescales it to the anchor. So an incremental run recomputes only the
    items with events from new load batches (all of their events, so the distinct visitors
    are exact too: delete+insert by item_id), and every other row stays right. It recomputes
    every item when the frame, the half-life or a weight changed (decay_signature, the same
    in every row), and always with a popularity window (the window slides with the anchor).
    An item's events never leave it in an incremental run: events are only added, and
    new property snapshots or a new tree stop int_events_sessionized's incremental run. -#}
{%- set window_days = var('popularity_window_days', none) -%}
{%- set has_window = window_days is not none and (window_days | string) | trim != '' -%}
{%- if has_window and (window_days | float) <= 0 -%}
  {{ exceptions.raise_compiler_error("var popularity_window_days must be a positive number of days or null, got: " ~ window_days) }}
{%- endif -%}
{%- set half_life_days = aisle_half_life_days('trending_half_life_days') -%}

{#- The anchor and the changed items come from dim_items (its per-item last event and last
    load batch, one index probe and a scan of 420K rows) rather than from two more scans of
    the 2.7M staged events. That also sets the build order: dbt starts the ready model of
    the lowest depth first, and this model must not take the free thread when
    int_events_sessionized (the longest model, the start of the critical path) is ready;
    after dim_items it is ready only once the sessionization has started. -#}

{%- set incremental_run = is_incremental() and not has_window %}

with

-- The latest event before as_of: the latest of dim_items' per-item last events.
anchor as (

    select {{ aisle_anchor_ts(ref('dim_items'), column='last_event_ts') }} as anchor_ts

),

weights as (

    {{ aisle_event_weights_row(ref('event_weights')) }}

),

frame as (

    select
        frame_ts as decay_frame_ts,
        {{ aisle_decay_signature('frame_ts', half_life_days, extra='popularity_window_days=' ~ (window_days if has_window else '')) }} as decay_signature
    from (select {{ aisle_decay_frame_ts('anchor.anchor_ts', half_life_days) }} as frame_ts from anchor) as frames
    cross join weights

),

{% if incremental_run %}
processed as (

    select
        (select coalesce(max(last_batch_id), 0) from {{ this }}) as max_batch_id,
        (select decay_signature from {{ this }} limit 1) as decay_signature

),

-- Items with events not counted yet (dim_items.last_batch_id: the latest batch of the
-- item's events, as here); every item when the stored frame is another one.
changed_items as (

    select items.item_id
    from {{ ref('dim_items') }} as items
    cross join processed
    cross join frame
    where items.last_batch_id > processed.max_batch_id
        or processed.decay_signature is distinct from frame.decay_signature

),

events as (

    select
        staged.item_id,
        staged.user_id,
        staged.event_type,
        staged.event_ts,
        staged.batch_id
    from {{ ref('stg_retailrocket__events') }} as staged
    where {{ aisle_before_as_of('staged.event_ts') }}
        and staged.item_id in (select item_id from changed_items)

),
{% else %}
events as (

    select
        item_id,
        user_id,
        event_type,
        event_ts,
        batch_id
    from {{ ref('stg_retailrocket__events') }}
    where {{ aisle_before_as_of('event_ts') }}

),
{% endif %}

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
            ~ aisle_decay_factor('events.event_ts', 'frame.decay_frame_ts', half_life_days)
        ) }} as trending_frame_score,
        count(*) as n_events,
        max(events.event_ts) as last_event_ts,
        max(events.batch_id) as last_batch_id
    from events
    cross join anchor
    cross join weights
    cross join frame
    group by events.item_id

),

final as (

    select
        per_item.item_id::bigint as item_id,
        per_item.popularity_weighted_events::double precision as popularity_weighted_events,
        per_item.popularity_n_users::bigint as popularity_n_users,
        per_item.popularity_n_events::bigint as popularity_n_events,
        per_item.trending_frame_score::double precision as trending_frame_score,
        frame.decay_frame_ts::timestamptz as decay_frame_ts,
        frame.decay_signature::bigint as decay_signature,
        per_item.n_events::bigint as n_events,
        per_item.last_event_ts::timestamptz as last_event_ts,
        per_item.last_batch_id::bigint as last_batch_id
    from per_item
    cross join frame

)

select * from final
