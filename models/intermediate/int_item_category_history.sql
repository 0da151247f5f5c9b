{#-
  The category of every item over time: one row per validity interval
  [valid_from, valid_to) built from the categoryid snapshots before as_of. An event's
  category is the interval containing its time. The first interval of an item starts
  at '-infinity' (before the first snapshot the earliest known category applies); the
  current one ends at 'infinity'. Items without any categoryid snapshot have no rows
  here: fct_events and dim_items put them in the unknown bucket (-1).
-#}
{{
  config(
    materialized='incremental',
    incremental_strategy='replace_tail',
    tail_order_by='valid_from',
    unlogged=true,
    indexes=[{'columns': ['item_id', 'valid_from'], 'unique': true}],
    pre_hook=["{{ aisle_full_build_settings() }}"],
  )
}}

{%- set stale = aisle_property_history_is_stale() %}

with

snapshots as (

    select
        item_id,
        snapshot_ts,
        category_id,
        batch_id,
        line_no
    from {{ ref('stg_retailrocket__item_properties') }}
    where {{ 'true' if stale else 'false' }}
        and property = 'categoryid'
        and category_id is not null

),

{{ aisle_property_history('snapshots', 'category_id') }},

final as (

    select
        item_id,
        category_id,
        valid_from,
        valid_to,
        changed_at,
        valid_to = 'infinity'::timestamptz as is_current,
        last_batch_id
    from intervals

)

select * from final
