{{
  config(
    materialized='aisle_bulk_table',
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
    item is known to be unavailable at the anchor (null = unknown). The sums come from
    int_item_event_totals (one pass over the staged events shared with
    rec_item_popularity, built while int_events_sessionized is being built), which stores
    them in a decay frame so that it can be incremental: they are rescaled to the anchor
    here (aisle_decay_rescale, macros/recs.sql). -#}
{%- set half_life_days = aisle_half_life_days('trending_half_life_days') %}

with

-- The latest event is the latest of the items' last events.
anchor as (

    select {{ aisle_anchor_ts(ref('int_item_event_totals'), column='last_event_ts') }} as anchor_ts

),

per_item as (

    select
        totals.item_id,
        {{ aisle_decay_rescale('totals.trending_frame_score', 'totals.decay_frame_ts', 'anchor.anchor_ts', half_life_days) }}
            as trending_score,
        totals.n_events,
        totals.last_event_ts
    from {{ ref('int_item_event_totals') }} as totals
    cross join anchor

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
