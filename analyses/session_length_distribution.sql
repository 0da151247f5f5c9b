-- Session length distribution: sessions by duration bucket (and by number of events),
-- with the share of all sessions, the cumulative share and the conversion rate per
-- bucket. A one-event session lasts 0 s.

with

sessions as (

    select
        duration_seconds,
        n_events,
        is_converted
    from {{ ref('fct_sessions') }}

),

bucketed as (

    select
        case
            when duration_seconds = 0 then 0
            when duration_seconds < 60 then 1
            when duration_seconds < 300 then 2
            when duration_seconds < 900 then 3
            when duration_seconds < 1800 then 4
            when duration_seconds < 3600 then 5
            when duration_seconds < 7200 then 6
            else 7
        end as bucket_no,
        n_events,
        is_converted
    from sessions

),

labels as (

    select *
    from (values
        (0, '0 s (one event)'),
        (1, '< 1 min'),
        (2, '1-5 min'),
        (3, '5-15 min'),
        (4, '15-30 min'),
        (5, '30-60 min'),
        (6, '1-2 h'),
        (7, '>= 2 h')
    ) as buckets (bucket_no, duration_bucket)

),

per_bucket as (

    select
        bucket_no,
        count(*) as n_sessions,
        avg(n_events) as avg_events,
        count(*) filter (where is_converted) as n_converted
    from bucketed
    group by bucket_no

)

select
    labels.duration_bucket,
    coalesce(per_bucket.n_sessions, 0) as n_sessions,
    round(coalesce(per_bucket.n_sessions, 0)::numeric / sum(per_bucket.n_sessions) over (), 4) as share,
    round(sum(coalesce(per_bucket.n_sessions, 0)) over (order by labels.bucket_no)::numeric
          / sum(per_bucket.n_sessions) over (), 4) as cumulative_share,
    round(per_bucket.avg_events, 2) as avg_events,
    round(per_bucket.n_converted::numeric / nullif(per_bucket.n_sessions, 0), 4) as conversion_rate
from labels
left join per_bucket
    on labels.bucket_no = per_bucket.bucket_no
order by labels.bucket_no
