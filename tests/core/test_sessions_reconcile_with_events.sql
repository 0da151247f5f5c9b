-- The events in sessions add up to the staged events: every staged event is in exactly
-- one session (int_events_sessionized and fct_events have one row per staged event,
-- fct_sessions' n_events sum to it), and there are as many sessions as session starts.
--
-- The same scans also check every row of the two facts (they used to be two more
-- expression tests, each one more pass over millions of rows):
-- - fct_events: every required column is set, the event type is known and the event
--   is not before its session's start;
-- - fct_sessions: the counts are consistent (end >= start, n_events = views + carts +
--   purchases, 1 <= distinct categories <= distinct items <= n_events, is_converted iff
--   a purchase).
-- Fails with one row holding all the counts when any of these is off.

with

staged as (

    select count(*) as n_events
    from {{ ref('stg_retailrocket__events') }}

),

sessionized as (

    select
        count(*) as n_events,
        count(*) filter (where session_event_no = 1) as n_session_starts
    from {{ ref('int_events_sessionized') }}

),

facts as (

    select
        count(*) as n_events,
        count(*) filter (
            where not coalesce(
                event_ts is not null and event_date is not null and user_id is not null
                and item_id is not null and session_id is not null and session_start_ts is not null
                and category_id is not null and root_category_id is not null and batch_id is not null
                and event_type in ('view', 'addtocart', 'transaction')
                and session_start_ts <= event_ts,
                false)
        ) as n_invalid_events
    from {{ ref('fct_events') }}

),

sessions as (

    select
        count(*) as n_sessions,
        coalesce(sum(n_events), 0) as n_events,
        count(*) filter (
            where not coalesce(
                session_end >= session_start and duration_seconds >= 0
                and n_events = n_views + n_carts + n_purchases
                and n_distinct_items between 1 and n_events
                and n_distinct_categories between 1 and n_distinct_items
                and is_converted = (n_purchases > 0),
                false)
        ) as n_inconsistent_sessions
    from {{ ref('fct_sessions') }}

)

select
    staged.n_events as staged_events,
    sessionized.n_events as sessionized_events,
    facts.n_events as fact_events,
    sessions.n_events as events_in_sessions,
    sessionized.n_session_starts as session_starts,
    sessions.n_sessions as sessions,
    facts.n_invalid_events as invalid_fact_events,
    sessions.n_inconsistent_sessions as inconsistent_sessions
from staged
cross join sessionized
cross join facts
cross join sessions
where staged.n_events <> sessionized.n_events
    or staged.n_events <> facts.n_events
    or staged.n_events <> sessions.n_events
    or sessionized.n_session_starts <> sessions.n_sessions
    or facts.n_invalid_events > 0
    or sessions.n_inconsistent_sessions > 0
