{#
  One route of rec_user_recommendations (the view rec_user_recs_fast_path or the table
  rec_user_recs_general_path), in one pass over its rows (separate tests would each scan
  it): every known visitor (dim_users.n_events >= known_user_min_events) of this route has a
  list and every list belongs to one; every list has exactly top_n rows with the ranks
  1..top_n, each once (unique (user_id, rank)), and top_n distinct items (unique (user_id,
  item_id)); no row holds a null score, an item known to be unavailable at as_of (dim_items)
  or a source outside category_cf, category_trending, trending, popularity (null included).
  Fails one row per bad visitor, saying what is wrong. The fast route is a view, so this is
  its only check of uniqueness and nulls (its reasons are literals and concatenations of
  non-null columns; item, rank and source nulls fail the checks above). The general table
  has a unique index on (user_id, item_id), checked by its recs_unique_index test, and
  not-null columns, so its distinct items are not counted again here.
  The route of a known visitor is rec_user_profiles.is_fast; a known visitor without a profile
  belongs to the general route, so the two tests together expect every known visitor exactly
  once, and a visitor in the wrong table, or in both, fails one of them.
  Not here: never-purchased (recs_user_recommendations_never_purchased).
  With var evaluation_users set (`aisle evaluate`), the known visitors are those among the
  evaluation's users (aisle_evaluation_users): the build computes only them.
    data_tests:
      - recs_hybrid_lists_are_complete:
          arguments: {route: fast}
#}
{% test recs_hybrid_lists_are_complete(model, route) %}
{%- if route not in ('fast', 'general') -%}
  {{ exceptions.raise_compiler_error("recs_hybrid_lists_are_complete: route must be 'fast' or 'general', got: " ~ route) }}
{%- endif -%}
{%- set top_n = var('top_n') | int -%}
{%- if top_n > 61 -%}
  {{ exceptions.raise_compiler_error("recs_hybrid_lists_are_complete: the rank check holds ranks in a 64-bit mask, so top_n must be at most 61, got: " ~ top_n) }}
{%- endif -%}
{%- set min_events = var('known_user_min_events') | int %}
{%- set users = aisle_evaluation_users() %}

with

unavailable_items as (

    select item_id
    from {{ ref('dim_items') }}
    where is_available = false

),

-- As few aggregates as the checks need: each one costs a call per row, on 12M rows for the
-- fast route. The ranks need no check of their own: a mask with exactly the bits 1..top_n,
-- over exactly top_n rows, means every rank is in 1..top_n and none repeats (a rank outside
-- 1..61, or null, sets no bit). One count covers every row-level fault. The unavailable
-- items are probed in a hashed subplan (`in (select ...)` inside the aggregate's filter), not
-- joined: a join of the 12M rows cost about 3 s more at full scale.
lists as (

    select
        recommendations.user_id,
        count(*) as n_rows,
        {%- if route == 'fast' %}
        count(distinct recommendations.item_id) as n_items,
        {%- else %}
        -- the general table's unique index on (user_id, item_id) (test recs_unique_index) and
        -- its not-null item_id already rule out a duplicate or null item: no per-visitor
        -- distinct count, so the 1.9M rows are grouped by hashing, with no sort
        count(*) as n_items,
        {%- endif %}
        bit_or(case when recommendations.rank between 1 and 61 then 1::bigint << recommendations.rank else 0 end)
            as rank_mask,
        count(*) filter (
            where recommendations.score is null
                or recommendations.item_id in (select item_id from unavailable_items)
                or coalesce(recommendations.source, '') not in ('category_cf', 'category_trending', 'trending', 'popularity')
        ) as n_bad_rows
    from {{ model }} as recommendations
    group by recommendations.user_id

),

known_users as (

    select visitors.user_id
    from {{ ref('dim_users') }} as visitors
    left join {{ ref('rec_user_profiles') }} as profiles
        on visitors.user_id = profiles.user_id
    where visitors.n_events >= {{ min_events }}
    {%- if users is not none %}
        and visitors.user_id in (select user_id from {{ users }})
    {%- endif %}
    {%- if route == 'fast' %}
        and profiles.is_fast
    {%- else %}
        and profiles.is_fast is not true
    {%- endif %}

)

select
    coalesce(known_users.user_id, lists.user_id) as user_id,
    case
        when lists.user_id is null then 'known visitor without a list'
        when known_users.user_id is null then 'list of a visitor who is not a known visitor of the {{ route }} route'
        when lists.n_rows <> {{ top_n }} then 'not exactly {{ top_n }} rows'
        when lists.rank_mask <> {{ (2 ** (top_n + 1)) - 2 }} then 'ranks are not 1..{{ top_n }}, each once'
        when lists.n_items <> {{ top_n }} then 'not {{ top_n }} distinct items (a duplicate, or a null item)'
        else 'a row with a null score, an item known to be unavailable, or an unknown source'
    end as problem
from known_users
full outer join lists
    on known_users.user_id = lists.user_id
where known_users.user_id is null
    or lists.user_id is null
    or lists.n_rows <> {{ top_n }}
    or lists.rank_mask <> {{ (2 ** (top_n + 1)) - 2 }}
    or lists.n_items <> {{ top_n }}
    or lists.n_bad_rows > 0

{% endtest %}
