{{
  config(
    contract={'enforced': true},
    indexes=[
      {'columns': ['item_id'], 'unique': true},
      {'columns': ['rank_overall']},
      {'columns': ['category_id', 'rank_in_category']},
      {'columns': ['root_category_id', 'rank_in_root']},
    ],
  )
}}

{#- Item popularity: the weighted event count and distinct visitors per item over the
    popularity window (var popularity_window_days before the anchor; null = all history
    before as_of), ranked overall, within the item's category and within its root. -#}
{%- set window_days = var('popularity_window_days', none) -%}
{%- if window_days is not none and (window_days | string) | trim != '' and (window_days | float) <= 0 -%}
  {{ exceptions.raise_compiler_error("var popularity_window_days must be a positive number of days or null, got: " ~ window_days) }}
{%- endif -%}

with

events as (

    select
        item_id,
        user_id,
        event_type,
        event_ts
    from {{ ref('fct_events') }}
    where {{ aisle_before_as_of('event_ts') }}

),

{% if window_days is not none and (window_days | string) | trim != '' %}
anchor as (

    select {{ aisle_anchor_ts(ref('fct_events')) }} as anchor_ts

),

windowed as (

    select
        events.item_id,
        events.user_id,
        events.event_type
    from events
    cross join anchor
    where events.event_ts >= anchor.anchor_ts - {{ window_days | float }} * interval '1 day'

),
{% else %}
windowed as (

    select
        item_id,
        user_id,
        event_type
    from events

),
{% endif %}

weights as (

    select
        event_type,
        weight
    from {{ ref('event_weights') }}

),

-- One row per (item, visitor) first: the distinct-visitor count is then a plain count.
item_users as (

    select
        windowed.item_id,
        windowed.user_id,
        {{ aisle_exact_sum('coalesce(weights.weight, 0)') }} as weighted_events,
        count(*) as n_events
    from windowed
    left join weights
        on windowed.event_type = weights.event_type
    group by windowed.item_id, windowed.user_id

),

per_item as (

    select
        item_id,
        {{ aisle_exact_sum('weighted_events') }} as weighted_events,
        count(*) as n_users,
        sum(n_events)::bigint as n_events
    from item_users
    group by item_id

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
        (row_number() over (order by weighted_events desc, item_id))::integer as rank_overall,
        (row_number() over (partition by category_id order by weighted_events desc, item_id))::integer as rank_in_category,
        (row_number() over (partition by root_category_id order by weighted_events desc, item_id))::integer as rank_in_root,
        is_available::boolean as is_available
    from enriched

)

select * from final
