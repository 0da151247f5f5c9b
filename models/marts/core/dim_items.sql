{#-
  One row per item known before as_of, from the events or the property snapshots: the
  current category (the latest categoryid snapshot before as_of; -1 unknown) and its
  root, the current availability (the latest `available` snapshot before as_of; null
  when never snapshotted), first and last event, and event counts.

  Reads the staged events, not int_events_sessionized: it needs no session and no
  category as of the event time, so it builds while the events are being sessionized
  (and the item marts after it), off the build's critical path.

  Incremental: only the items with events from new load batches are recomputed
  (delete+insert by item_id), by adding the new events to the item's stored row: the
  counts add up, first/last event and last_batch_id are a min/max. This is exact
  because an event with batch_id above the table's watermark was never counted: a
  staged event keeps the batch of its first copy, so a duplicate arriving later is not
  new. New property snapshots or a new category tree stop the incremental run (rebuild
  with --full-refresh then), with the check int_events_sessionized makes, on its
  stored watermark.
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
      {'columns': ['last_event_ts']},
    ],
    pre_hook=["{{ aisle_full_build_settings() }}"],
  )
}}

{{- aisle_require_current_categories('category_watermark', model_name='int_events_sessionized') }}

with

{% if is_incremental() %}
-- Only the events of batches not counted yet (a seq scan of the staged events: cheaper
-- than an index built on every full refresh for this one query).
events as (

    select staged.*
    from {{ ref('stg_retailrocket__events') }} as staged
    where staged.batch_id > (select coalesce(max(last_batch_id), 0) from {{ this }})

),
{% else %}
events as (

    select * from {{ ref('stg_retailrocket__events') }}

),
{% endif %}

new_item_events as (

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

{% if is_incremental() %}
-- The stored totals of the changed items plus their new events (one probe of the
-- item_id unique index per changed item).
item_events as (

    select
        new_item_events.item_id,
        least(stored.first_event_ts, new_item_events.first_event_ts) as first_event_ts,
        greatest(stored.last_event_ts, new_item_events.last_event_ts) as last_event_ts,
        coalesce(stored.n_events, 0) + new_item_events.n_events as n_events,
        coalesce(stored.n_views, 0) + new_item_events.n_views as n_views,
        coalesce(stored.n_carts, 0) + new_item_events.n_carts as n_carts,
        coalesce(stored.n_purchases, 0) + new_item_events.n_purchases as n_purchases,
        greatest(stored.last_batch_id, new_item_events.last_batch_id) as last_batch_id
    from new_item_events
    left join {{ this }} as stored
        on new_item_events.item_id = stored.item_id

),

items as (

    select item_id from item_events

),
{% else %}
item_events as (

    select * from new_item_events

),
{% endif %}

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
