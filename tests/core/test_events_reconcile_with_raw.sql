-- Staged events + the duplicate copies removed = the raw event rows (of finished load
-- batches, before as_of). Fails with the three counts when a row went missing (or a
-- replaced batch is still staged: rebuild with --full-refresh).

with

raw_rows as (

    select count(*) as n_rows
    from {{ source('retailrocket', 'events') }} as events
    inner join {{ source('retailrocket', 'load_batches') }} as batches
        on events.batch_id = batches.batch_id
    where batches.file_kind = 'events'
        and batches.status = 'finished'
        and {{ aisle_before_as_of(aisle_epoch_ms_to_timestamptz('events."timestamp"')) }}

),

staged as (

    select
        count(*) as n_events,
        coalesce(sum(n_copies), 0) as n_copies
    from {{ ref('stg_retailrocket__events') }}

),

removed as (

    select coalesce(sum(n_removed), 0) as n_removed
    from {{ ref('stg_retailrocket__event_duplicates') }}

)

select
    raw_rows.n_rows as raw_rows,
    staged.n_events as staged_events,
    removed.n_removed as removed_duplicates
from raw_rows
cross join staged
cross join removed
where raw_rows.n_rows <> staged.n_events + removed.n_removed
    or staged.n_copies <> raw_rows.n_rows
