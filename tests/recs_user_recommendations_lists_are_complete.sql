{#
  rec_user_recommendations, in one pass over its 14M rows (separate tests would each scan
  it): every known visitor (dim_users.n_events >= known_user_min_events) has a list and
  every list belongs to a known visitor; every list has exactly top_n rows with the ranks
  1..top_n, each once (unique (user_id, rank)); no row holds an item known to be
  unavailable at as_of (dim_items) or a source outside category_cf, category_trending,
  trending, popularity. Fails one row per bad visitor, saying what is wrong.
  Not here: unique (user_id, item_id), enforced by the table's unique index
  (recs_unique_index), and never-purchased (recs_user_recommendations_never_purchased).
  With var evaluation_users set (`aisle evaluate`), the known visitors are those among the
  evaluation's users (aisle_evaluation_users): the build computes only them.
#}
{%- set top_n = var('top_n') | int -%}
{%- set min_events = var('known_user_min_events') | int %}
{%- set users = aisle_evaluation_users() %}

with

unavailable_items as (

    select item_id
    from {{ ref('dim_items') }}
    where is_available = false

),

lists as (

    select
        recommendations.user_id,
        count(*) as n_rows,
        bit_or(case when recommendations.rank between 1 and 61 then 1::bigint << recommendations.rank else 0 end)
            as rank_mask,
        count(*) filter (where recommendations.rank not between 1 and {{ top_n }}) as n_bad_ranks,
        count(unavailable_items.item_id) as n_unavailable,
        count(*) filter (
            where recommendations.source not in ('category_cf', 'category_trending', 'trending', 'popularity')
        ) as n_bad_sources
    from {{ ref('rec_user_recommendations') }} as recommendations
    left join unavailable_items
        on recommendations.item_id = unavailable_items.item_id
    group by recommendations.user_id

),

known_users as (

    select user_id
    from {{ ref('dim_users') }}
    where n_events >= {{ min_events }}
    {%- if users is not none %}
        and user_id in (select user_id from {{ users }})
    {%- endif %}

)

select
    coalesce(known_users.user_id, lists.user_id) as user_id,
    case
        when lists.user_id is null then 'known visitor without a list'
        when known_users.user_id is null then 'list of a visitor who is not known'
        when lists.n_rows <> {{ top_n }} then 'not exactly {{ top_n }} rows'
        when lists.n_bad_ranks > 0 or lists.rank_mask <> {{ (2 ** (top_n + 1)) - 2 }} then 'ranks are not 1..{{ top_n }}, each once'
        when lists.n_unavailable > 0 then 'an item known to be unavailable'
        else 'an unknown source'
    end as problem
from known_users
full outer join lists
    on known_users.user_id = lists.user_id
where known_users.user_id is null
    or lists.user_id is null
    or lists.n_rows <> {{ top_n }}
    or lists.n_bad_ranks > 0
    or lists.rank_mask <> {{ (2 ** (top_n + 1)) - 2 }}
    or lists.n_unavailable > 0
    or lists.n_bad_sources > 0
