-- The events in sessions add up to the staged events: every staged event is in exactly
-- one session (int_events_sessionized and fct_events have one row per staged event,
-- fct_sessions' n_events sum to it), and there are as many sessions as session starts.

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

    select count(*) as n_events
    from {{ ref('fct_events') }}

),

sessions as (

    select
        count(*) as n_sessions,
        coalesce(sum(n_events), 0) as n_events
    from {{ ref('fct_sessions') }}

)

select
    staged.n_events as staged_events,
    sessionized.n_events as sessionized_events,
    facts.n_events as fact_events,
    sessions.n_events as events_in_sessions,
    sessionized.n_session_starts as session_starts,
    sessions.n_sessions as sessions
from staged
cross join sessionized
cross join facts
cross join sessions
where staged.n_events <> sessionized.n_events
    or staged.n_events <> facts.n_events
    or staged.n_events <> sessions.n_events
    or sessionized.n_session_starts <> sessions.n_sessions
