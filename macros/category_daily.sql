{#
  The body of agg_category_daily and agg_root_category_daily: per UTC day and per
  value of `group_column` (category_id or root_category_id): event counts by type,
  distinct visitors, sessions with an event in the group that day, the sessions among
  them with a transaction in the group that day, and the conversion rate
  (converted sessions / sessions). last_batch_id is the latest load batch that
  contributed an event (lineage, and the incremental watermark).

  Reads fct_events (the view over int_events_sessionized: the same rows, and the same
  indexes for the incremental runs), not the intermediate table: that puts the two
  daily aggregates one step later in dbt's build order than fct_sessions and
  rec_user_category_affinity, which read the table and start as soon as the events are
  sessionized: dbt orders ready nodes by depth, then by name, and the
  aggregates would otherwise come first and leave the longest models (and their tests)
  for the end of the build.

  One sort by (day, group, visitor, session) feeds two streaming aggregations: per
  session cell, then per (day, group) where the distinct visitors arrive sorted (a
  hash aggregate over ~2M session cells costs twice as much at full scale).

  Incremental (strategy replace_tail over event_date): every day from the first day
  that a new event can have changed (the start of the earliest session holding a new
  event) is recomputed.
#}
{% macro aisle_category_daily(group_column) %}

with

{% if is_incremental() %}
processed as (

    select coalesce(max(last_batch_id), 0) as max_batch_id
    from {{ this }}

),

first_changed_day as (

    select (min(sessionized.session_start_ts) at time zone 'UTC')::date as event_date
    from {{ ref('fct_events') }} as sessionized
    -- a scalar watermark, so that the BRIN index on batch_id selects the new rows' blocks
    where sessionized.batch_id > (select max_batch_id from processed)

),

events as (

    select sessionized.*
    from {{ ref('fct_events') }} as sessionized
    inner join first_changed_day
        on sessionized.event_date >= first_changed_day.event_date

),
{% else %}
events as (

    select * from {{ ref('fct_events') }}

),
{% endif %}

session_cells as (

    select
        event_date,
        {{ group_column }},
        user_id,
        session_id,
        count(*) filter (where event_type = 'view') as n_views,
        count(*) filter (where event_type = 'addtocart') as n_carts,
        count(*) filter (where event_type = 'transaction') as n_purchases,
        max(batch_id) as last_batch_id
    from events
    group by event_date, {{ group_column }}, user_id, session_id
    order by event_date, {{ group_column }}, user_id, session_id

),

cells as (

    select
        event_date,
        {{ group_column }},
        sum(n_views)::bigint as n_views,
        sum(n_carts)::bigint as n_carts,
        sum(n_purchases)::bigint as n_purchases,
        count(distinct user_id)::bigint as n_visitors,
        count(*)::bigint as n_sessions,
        count(*) filter (where n_purchases > 0)::bigint as n_converted_sessions,
        max(last_batch_id) as last_batch_id
    from session_cells
    group by event_date, {{ group_column }}

),

final as (

    select
        event_date,
        {{ group_column }},
        n_views + n_carts + n_purchases as n_events,
        n_views,
        n_carts,
        n_purchases,
        n_visitors,
        n_sessions,
        n_converted_sessions,
        n_converted_sessions::double precision / n_sessions as conversion_rate,
        last_batch_id
    from cells

)

select * from final

{% endmacro %}
