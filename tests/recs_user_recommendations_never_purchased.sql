{#
  No visitor is recommended an item they bought before as_of (fct_events transactions),
  nor, when recommend_viewed_items is false, any item they touched. The (visitor, item)
  pairs to avoid are looked up in rec_user_recommendations one visitor at a time, through
  the indexes under the view (the fast route's profile and category list, the general
  table's unique index on (user_id, item_id)), so the 14M rows are never computed or
  scanned. Fails every offending row.
#}
{%- set recommend_viewed = aisle_bool_var('recommend_viewed_items') %}

with

forbidden_pairs as (

    select distinct
        user_id,
        item_id
    from {{ ref('fct_events') }}
    {%- if recommend_viewed %}
    where event_type = 'transaction'
    {%- endif %}

)

select
    recommendations.*,
    '{{ "purchased by the visitor" if recommend_viewed else "touched by the visitor" }}' as problem
from forbidden_pairs
-- lateral, kept apart by `offset 0`: index probes per pair (the view is a union of two
-- routes, and a plain join is planned as a hash join over all of their rows)
cross join lateral (
    select *
    from {{ ref('rec_user_recommendations') }} as recommendations
    where recommendations.user_id = forbidden_pairs.user_id
        and recommendations.item_id = forbidden_pairs.item_id
    offset 0
) as recommendations
