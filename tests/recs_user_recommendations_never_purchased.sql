{#
  No visitor is recommended an item they bought before as_of (fct_events transactions),
  nor, when recommend_viewed_items is false, any item they touched. The (visitor, item)
  pairs to avoid are looked up in rec_user_recommendations through its unique index on
  (user_id, item_id), so the 14M-row table is not scanned. Fails every offending row.
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
inner join {{ ref('rec_user_recommendations') }} as recommendations
    on forbidden_pairs.user_id = recommendations.user_id
    and forbidden_pairs.item_id = recommendations.item_id
