{#
  Every row of rec_user_recommendations is allowed: the item was never bought by the
  visitor (fct_events transactions before as_of), is not known to be unavailable at as_of
  (dim_items), was not even touched by the visitor when recommend_viewed_items is false,
  and the source is one of category_cf, category_trending, trending, popularity. One scan
  of the 14M-row mart with hash lookups into the small sets of purchased pairs and
  unavailable items, instead of one pass per check. Fails every bad row, with the reason.
#}
{%- set recommend_viewed = aisle_bool_var('recommend_viewed_items') %}

with

recommendations as (

    select
        user_id,
        rank,
        item_id,
        source
    from {{ ref('rec_user_recommendations') }}

),

forbidden_pairs as (

    select distinct
        user_id,
        item_id
    from {{ ref('fct_events') }}
    {%- if recommend_viewed %}
    where event_type = 'transaction'
    {%- endif %}

),

unavailable_items as (

    select item_id
    from {{ ref('dim_items') }}
    where is_available = false

)

select
    recommendations.*,
    case
        when forbidden_pairs.user_id is not null
            then '{{ "purchased by the visitor" if recommend_viewed else "touched by the visitor" }}'
        when unavailable_items.item_id is not null then 'known to be unavailable'
        else 'unknown source'
    end as problem
from recommendations
left join forbidden_pairs
    on recommendations.user_id = forbidden_pairs.user_id
    and recommendations.item_id = forbidden_pairs.item_id
left join unavailable_items
    on recommendations.item_id = unavailable_items.item_id
where forbidden_pairs.user_id is not null
    or unavailable_items.item_id is not null
    or recommendations.source not in ('category_cf', 'category_trending', 'trending', 'popularity')
