{{
  config(
    contract={'enforced': true},
    pre_hook=["{{ aisle_serial_plan() }}"],
    indexes=[
      {'columns': ['item_id'], 'unique': true},
      {'columns': ['rank_overall'], 'unique': true},
      {'columns': ['category_id', 'rank_in_category'], 'unique': true},
      {'columns': ['root_category_id', 'rank_in_root'], 'unique': true},
    ],
  )
}}

{#- Item trending: score = sum over the item's events of weight * 0.5 ^ (age / half-life),
    with age = anchor - event_ts, the anchor being as_of (or the latest event when as_of is
    unset, never now()) and the half-life the var trending_half_life_days. Ranked overall,
    within the item's category and within its root. is_available is false only when the
    item is known to be unavailable at the anchor (null = unknown). The events come from
    the staged events (the same rows as fct_events: trending needs neither sessions nor the
    category at event time), so this mart builds while int_events_sessionized is being
    built, not after it. -#}
{%- set half_life_days = aisle_half_life_days('trending_half_life_days') -%}

with

events as (

    select
        item_id,
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

per_item as (

    select
        events.item_id,
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

items as (

    select
        item_id,
        category_id,
        root_category_id,
        is_available
    from {{ ref('dim_items') }}

),

enriched as (

    select
        per_item.item_id,
        coalesce(items.category_id, -1)::bigint as category_id,
        coalesce(items.root_category_id, -1)::bigint as root_category_id,
        per_item.trending_score,
        per_item.n_events,
        per_item.last_event_ts,
        items.is_available
    from per_item
    left join items
        on per_item.item_id = items.item_id

),

final as (

    select
        item_id::bigint as item_id,
        category_id,
        root_category_id,
        trending_score::double precision as trending_score,
        n_events::bigint as n_events,
        last_event_ts::timestamptz as last_event_ts,
        {{ aisle_item_ranks('trending_score') }},
        is_available::boolean as is_available
    from enriched

)

select * from final
