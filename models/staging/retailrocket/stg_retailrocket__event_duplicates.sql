{#-
  Audit of the deduplication: every staged event that had exact duplicate rows in raw,
  with the copy kept and how many copies were removed. Raw rows (finished event batches,
  before as_of) = staged events + sum(n_removed) (test_events_reconcile_with_raw).
-#}
{{ config(materialized='view') }}

with

staged as (

    select * from {{ ref('stg_retailrocket__events') }}

),

final as (

    select
        event_id,
        event_ts,
        user_id,
        item_id,
        event_type,
        transaction_id,
        batch_id as kept_batch_id,
        line_no as kept_line_no,
        n_copies,
        n_copies - 1 as n_removed
    from staged
    where n_copies > 1

)

select * from final
