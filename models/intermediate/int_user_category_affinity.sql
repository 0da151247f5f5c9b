{{
  config(
    materialized='incremental',
    incremental_strategy='delete_insert_analyzed',
    unique_key=['user_id', 'category_id'],
    indexes=[
      {'columns': ['user_id', 'category_id'], 'unique': true},
    ],
    pre_hook=["{{ aisle_serial_plan() }}", "{{ aisle_full_build_settings(prefer_sort=true) }}"],
  )
}}

{#- The sums behind rec_user_category_affinity (a view that rescales them to the anchor):
    per (visitor, category of the item at event time), sum(weight * 0.5 ^ ((R - event_ts) /
    affinity_half_life_days)) in the decay frame R (decay_frame_ts: the anchor rounded down
    to a grid of 8 half-lives, macros/recs.sql), the raw counts per event type and the last
    interaction. The unknown-category bucket (-1) is left out: it says nothing about taste.
    ~1.6M rows at full scale, so it is kept lean:
    - one pass over the events, read from int_events_sessionized (the table behind
      fct_events, the same rows): this long model then starts as soon as the events are
      sessionized, ahead of the shorter daily aggregates, which read fct_events;
    - one sorted aggregate (with ~1.6M groups, Sort + GroupAggregate measured 3x faster
      than HashAggregate at full scale, and the rows come out in index order);
    - one index, unique on the grain (user_id, category_id): a duplicate fails the build,
      and its leading user_id serves the per-visitor lookups and streaming through the view.

    Incremental: a new day moves the anchor, which would change every score; in the frame,
    only the visitors with events from new load batches change. Their rows are recomputed
    from all their events (one range scan of int_events_sessionized's (user_id, event_ts)
    index each) and replaced (delete+insert by (user_id, category_id)); a visitor's
    categories never disappear (events are only added, and new property snapshots or a
    new tree stop int_events_sessionized's incremental run). Every visitor is recomputed
    when the frame, the half-life or a weight changed (decay_signature, the same in every
    row). -#}
{%- set half_life_days = aisle_half_life_days('affinity_half_life_days') %}

with

-- The latest event before as_of, read off dim_items' per-item last events (420K rows, built
-- while the events are sessionized): the same timestamp as max(event_ts) over the 2.7M
-- events, without a second full scan of them.
anchor as (

    select {{ aisle_anchor_ts(ref('dim_items'), column='last_event_ts') }} as anchor_ts

),

weights as (

    {{ aisle_event_weights_row(ref('event_weights')) }}

),

frame as (

    select
        frame_ts as decay_frame_ts,
        {{ aisle_decay_signature('frame_ts', half_life_days) }} as decay_signature
    from (select {{ aisle_decay_frame_ts('anchor.anchor_ts', half_life_days) }} as frame_ts from anchor) as frames
    cross join weights

),

{% if is_incremental() %}
processed as (

    select
        (select coalesce(max(last_batch_id), 0) from {{ this }}) as max_batch_id,
        (select decay_signature from {{ this }} limit 1) as decay_signature

),

-- The visitors with events not counted yet (a scalar watermark, so that the BRIN index on
-- batch_id selects the new rows' blocks); every visitor when the stored frame is another
-- one (a one-time filter: the second scan runs only then).
changed_users as (

    select sessionized.user_id
    from {{ ref('int_events_sessionized') }} as sessionized
    where sessionized.batch_id > (select max_batch_id from processed)
    union
    select sessionized.user_id
    from {{ ref('int_events_sessionized') }} as sessionized
    where (select decay_signature from processed) is distinct from (select decay_signature from frame)

),

events as (

    select user_events.*
    from changed_users
    -- lateral: one range scan of the (user_id, event_ts) index per visitor (`offset 0`
    -- keeps it apart; flattened, it is planned as a hash join over a full scan)
    cross join lateral (
        select
            sessionized.user_id,
            sessionized.category_id,
            sessionized.event_type,
            sessionized.event_ts,
            sessionized.batch_id
        from {{ ref('int_events_sessionized') }} as sessionized
        where sessionized.user_id = changed_users.user_id
            and {{ aisle_before_as_of('sessionized.event_ts') }}
            and sessionized.category_id <> -1
        offset 0
    ) as user_events

),
{% else %}
events as (

    select
        user_id,
        category_id,
        event_type,
        event_ts,
        batch_id
    from {{ ref('int_events_sessionized') }}
    where {{ aisle_before_as_of('event_ts') }}
        and category_id <> -1

),
{% endif %}

per_pair as (

    select
        events.user_id,
        events.category_id,
        {{ aisle_exact_sum(
            aisle_event_weight('events.event_type') ~ ' * '
            ~ aisle_decay_factor('events.event_ts', 'frame.decay_frame_ts', half_life_days)
        ) }} as affinity_frame_score,
        count(*) filter (where events.event_type = 'view') as n_views,
        count(*) filter (where events.event_type = 'addtocart') as n_carts,
        count(*) filter (where events.event_type = 'transaction') as n_purchases,
        count(*) as n_events,
        max(events.event_ts) as last_event_ts,
        max(events.batch_id) as last_batch_id
    from events
    cross join frame
    cross join weights
    group by events.user_id, events.category_id

),

final as (

    select
        per_pair.user_id::bigint as user_id,
        per_pair.category_id::bigint as category_id,
        per_pair.affinity_frame_score::double precision as affinity_frame_score,
        frame.decay_frame_ts::timestamptz as decay_frame_ts,
        frame.decay_signature::bigint as decay_signature,
        per_pair.n_views::bigint as n_views,
        per_pair.n_carts::bigint as n_carts,
        per_pair.n_purchases::bigint as n_purchases,
        per_pair.n_events::bigint as n_events,
        per_pair.last_event_ts::timestamptz as last_event_ts,
        per_pair.last_batch_id::bigint as last_batch_id
    from per_pair
    cross join frame

)

select * from final
