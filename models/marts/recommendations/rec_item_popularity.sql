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

{#- Item popularity: the weighted event count and distinct visitors per item over the
    popularity window (the var popularity_window_days before the anchor, which is as_of or
    the latest event; null = all history before as_of), ranked overall, within the item's
    category and within its root. The sums come from int_item_event_totals (one pass over
    the staged events shared with rec_item_trending, built while int_events_sessionized is
    being built); an item with no event in the window has no row here. -#}

with

per_item as (

    select
        item_id,
        popularity_weighted_events as weighted_events,
        popularity_n_users as n_users,
        popularity_n_events as n_events
    from {{ ref('int_item_event_totals') }}
    where popularity_n_events > 0

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
        per_item.weighted_events,
        per_item.n_users,
        per_item.n_events,
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
        weighted_events::double precision as weighted_events,
        n_users::bigint as n_users,
        n_events::bigint as n_events,
        {{ aisle_item_ranks('weighted_events') }},
        is_available::boolean as is_available
    from enriched

)

select * from final
