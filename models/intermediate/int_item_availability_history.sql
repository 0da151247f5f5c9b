{#-
  Item availability over time, built like int_item_category_history from the
  `available` snapshots before as_of: one row per interval [valid_from, valid_to) with
  the same is_available; the first interval starts at '-infinity', the current one
  ends at 'infinity'. Items never snapshotted have no rows (availability unknown).
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

{#- Not a data dependency: an ordering one. Both histories read the same snapshots, and
    dbt would start this one first (same depth, name order); the category history gates
    int_events_sessionized, the longest chain of the build, while this one only feeds
    dim_items. -#}
-- depends_on: {{ ref('int_item_category_history') }}

{%- set stale = aisle_property_history_is_stale() %}

with

snapshots as (

    select
        item_id,
        snapshot_ts,
        is_available,
        batch_id,
        line_no
    from {{ ref('stg_retailrocket__item_properties') }}
    where {{ 'true' if stale else 'false' }}
        and property = 'available'
        and is_available is not null

),

{{ aisle_property_history('snapshots', 'is_available') }},

final as (

    select
        item_id,
        is_available,
        valid_from,
        valid_to,
        changed_at,
        valid_to = 'infinity'::timestamptz as is_current,
        last_batch_id
    from intervals

)

select * from final
