{#-
  One row per event (deduplicated, before as_of) for BI and the recommendation marts:
  the event, its session, and the item's category as of the event time with that
  category's root (-1 = unknown).

  A view with an enforced contract over int_events_sessionized, which already holds
  exactly these rows (incrementally maintained, indexed on event_id and (user_id,
  event_ts)): a second 2.7M-row copy would double the build's biggest
  write for no gain. The reader role selects from the view without any right on the
  intermediate schema (a view runs with its owner's rights).
-#}
{{
  config(
    materialized='view',
    contract={'enforced': true},
  )
}}

with

events as (

    select * from {{ ref('int_events_sessionized') }}

),

final as (

    select
        event_id,
        event_ts,
        event_date,
        user_id,
        item_id,
        event_type,
        transaction_id,
        session_id,
        session_start_ts,
        category_id,
        root_category_id,
        batch_id
    from events

)

select * from final
