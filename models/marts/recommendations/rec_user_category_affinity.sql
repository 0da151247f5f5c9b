{{
  config(
    materialized='view',
    contract={'enforced': true},
  )
}}

{#- User-category affinity, the input of the Python CF step (aisle similarity): per
    (visitor, category of the item at event time), the time-decayed weighted score
    sum of weight * 0.5 ^ (age / affinity_half_life_days) anchored at as_of (or the latest
    event), the raw counts per event type and the last interaction. The unknown-category
    bucket (-1) is left out.

    A view over int_user_category_affinity, which stores the sums in a fixed decay frame so
    that a new day's build recomputes only the visitors it touched (macros/recs.sql): here
    they are rescaled to the anchor, one multiplication per row. Reads by visitor use that
    table's unique index on (user_id, category_id); the anchor is one probe of dim_items'
    index on last_event_ts. The view runs with its owner's rights, so the reader role needs
    no grant on the intermediate table. -#}
{%- set half_life_days = aisle_half_life_days('affinity_half_life_days') %}

{#- The anchor: as_of, or the latest event before it, read off dim_items' per-item last events
    (one probe of its index on last_event_ts). Every row of a build has the same frame (an
    incremental run that finds the stored frame outdated recomputes every row), so the
    factor is computed once per query, in a scalar subquery (an InitPlan), and each row is
    one multiplication: computed per row (power()) it made a full read ~40% slower. A row in
    another frame would still get its own factor. No CTE, so that full reads can still run
    in parallel. -#}
{%- set anchor = aisle_anchor_ts(ref('dim_items'), column='last_event_ts') %}
{%- set frame = '(select decay_frame_ts from ' ~ ref('int_user_category_affinity') ~ ' limit 1)' %}

with

final as (

    select
        pairs.user_id,
        pairs.category_id,
        case
            when pairs.decay_frame_ts = {{ frame }}
                then pairs.affinity_frame_score * (select {{ aisle_decay_factor(frame, anchor, half_life_days) }})
            else {{ aisle_decay_rescale('pairs.affinity_frame_score', 'pairs.decay_frame_ts', anchor, half_life_days) }}
        end as affinity_score,
        pairs.n_views,
        pairs.n_carts,
        pairs.n_purchases,
        pairs.n_events,
        pairs.last_event_ts
    from {{ ref('int_user_category_affinity') }} as pairs

)

select * from final
