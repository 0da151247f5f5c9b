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
    item is known to be unavailable at the anchor (null = unknown). The sums come from
    int_item_event_totals (one pass over the staged events shared with
    rec_item_popularity, built while int_events_sessionized is being built). -#}

with

per_item as (

    select
        item_id,
        trending_score,
        n_events,
        last_event_ts
    from {{ ref('int_item_event_totals') }}

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
