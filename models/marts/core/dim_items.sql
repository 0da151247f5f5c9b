{#-
  One row per item known before as_of, from the events or the property snapshots: the
  current category (the latest categoryid snapshot before as_of; -1 unknown) and its
  root, the current availability (the latest `available` snapshot before as_of; null
  when never snapshotted), first and last event, and event counts.

  Incremental: only the items with events from new load batches are recomputed
  (delete+insert by item_id). New property snapshots stop the incremental run earlier,
  in int_events_sessionized (rebuild with --full-refresh then).
-#}
{{
  config(
    materialized='incremental',
    incremental_strategy='delete_insert_analyzed',
    unique_key='item_id',
    on_schema_change='append_new_columns',
    contract={'enforced': true},
    indexes=[
      {'columns': ['item_id'], 'unique': true},
      {'columns': ['category_id']},
    ],
    pre_hook=["{{ aisle_full_build_settings() }}"],
    post_hook=["{{ aisle_analyze_if_new() }}"],
  )
}}

with

{% if is_incremental() %}
changed_items as (

    select distinct events.item_id
    from {{ ref('int_events_sessionized') }} as events
    where events.batch_id > (select coalesce(max(last_batch_id), 0) from {{ this }})

),

events as (

    select events.*
    from changed_items
    -- lateral: one scan of the item_id index per item
    cross join lateral (
        select *
        from {{ ref('int_events_sessionized') }} as item_events
        where item_events.item_id = changed_items.item_id
    ) as events

),

items as (

    select item_id from changed_items

),
{% else %}
events as (

    select * from {{ ref('int_events_sessionized') }}

),
{% endif %}

item_events as (

    select
        item_id,
        min(event_ts) as first_event_ts,
        max(event_ts) as last_event_ts,
        count(*) as n_events,
        count(*) filter (where event_type = 'view') as n_views,
        count(*) filter (where event_type = 'addtocart') as n_carts,
        count(*) filter (where event_type = 'transaction') as n_purchases,
        max(batch_id) as last_batch_id
    from events
    group by item_id

),

current_category as (

    select
        item_id,
        category_id,
        changed_at as category_since
    from {{ ref('int_item_category_history') }}
    where is_current

),

current_availability as (

    select
        item_id,
        is_available,
        changed_at as availability_since
    from {{ ref('int_item_availability_history') }}
    where is_current

),

{% if not is_incremental() %}
items as (

    select item_id from item_events
    union
    select item_id from current_category
    union
    select item_id from current_availability

),
{% endif %}

categories as (

    select
        category_id,
        root_category_id
    from {{ ref('int_category_paths') }}

),

final as (

    select
        items.item_id,
        coalesce(current_category.category_id, -1) as category_id,
        coalesce(categories.root_category_id, -1) as root_category_id,
        current_category.category_since,
        current_availability.is_available,
        current_availability.availability_since,
        item_events.first_event_ts,
        item_events.last_event_ts,
        coalesce(item_events.n_events, 0) as n_events,
        coalesce(item_events.n_views, 0) as n_views,
        coalesce(item_events.n_carts, 0) as n_carts,
        coalesce(item_events.n_purchases, 0) as n_purchases,
        item_events.last_batch_id
    from items
    left join item_events
        on items.item_id = item_events.item_id
    left join current_category
        on items.item_id = current_category.item_id
    left join categories
        on current_category.category_id = categories.category_id
    left join current_availability
        on items.item_id = current_availability.item_id

)

select * from final
