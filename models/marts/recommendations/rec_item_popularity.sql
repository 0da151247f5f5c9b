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

{#- Item popularity: the weighted event count and distinct visitors per item over the
    popularity window (the var popularity_window_days before the anchor, which is as_of or
    the latest event; null = all history before as_of), ranked overall, within the item's
    category and within its root. The events come from the staged events (the same rows
    as fct_events: popularity needs neither sessions nor the category at event time), so
    this mart builds while int_events_sessionized is being built, not after it. -#}
{%- set window_days = var('popularity_window_days', none) -%}
{%- set has_window = window_days is not none and (window_days | string) | trim != '' -%}
{%- if has_window and (window_days | float) <= 0 -%}
  {{ exceptions.raise_compiler_error("var popularity_window_days must be a positive number of days or null, got: " ~ window_days) }}
{%- endif -%}

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

windowed as (

    select
        events.item_id,
        events.user_id,
        events.event_type
    from events
    {%- if has_window %}
    cross join anchor
    where events.event_ts >= anchor.anchor_ts - {{ window_days | float }} * interval '1 day'
    {%- endif %}

),

weights as (

    {{ aisle_event_weights_row(ref('event_weights')) }}

),

per_item as (

    select
        windowed.item_id,
        {{ aisle_exact_sum(aisle_event_weight('windowed.event_type')) }} as weighted_events,
        count(distinct windowed.user_id) as n_users,
        count(*) as n_events
    from windowed
    cross join weights
    group by windowed.item_id

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
