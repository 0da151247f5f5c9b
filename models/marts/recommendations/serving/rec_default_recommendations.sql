{{
  config(
    contract={'enforced': true},
    indexes=[
      {'columns': ['root_category_id', 'rank']},
    ],
  )
}}

-- Built in the serving step, with the per-visitor lists:
-- depends_on: {{ source('similarity', 'category_similarity') }}

{#- The lists of visitors without a list of their own (unknown or cold visitors), top_n
    distinct items each, never an item known to be unavailable:
      root_category_id null   the global list: trending now (rec_item_trending order),
                               topped up with popular items if the catalogue is short;
      root_category_id = r    for a visitor browsing root category r (a context): the
                               trending items of r (category_trending), topped up with the
                               global trending list, then popularity.
    The unknown-category bucket (-1) gets no list of its own. -#}
{%- set top_n = aisle_positive_int_var('top_n') %}

with

trending as (

    select
        item_id,
        root_category_id,
        trending_score,
        row_number() over (order by trending_score desc, item_id) as rank_overall,
        row_number() over (partition by root_category_id order by trending_score desc, item_id) as rank_in_root
    from {{ ref('rec_item_trending') }}
    where is_available is not false

),

popularity as (

    select
        item_id,
        weighted_events,
        row_number() over (order by weighted_events desc, item_id) as rank_overall
    from {{ ref('rec_item_popularity') }}
    where is_available is not false

),

contexts as (

    select null::bigint as root_category_id

    union all

    select distinct root_category_id
    from trending
    where root_category_id <> -1

),

candidates as (

    -- trending within the root category (contexts other than the global one)
    select
        contexts.root_category_id,
        trending.item_id,
        trending.trending_score as score,
        'category_trending' as source,
        'trending in category ' || contexts.root_category_id as reason,
        1 as tier,
        trending.rank_in_root as tier_rank
    from contexts
    inner join trending
        on contexts.root_category_id = trending.root_category_id
        and trending.rank_in_root <= {{ top_n }}

    union all

    select
        contexts.root_category_id,
        trending.item_id,
        trending.trending_score as score,
        'trending' as source,
        'trending now' as reason,
        2 as tier,
        trending.rank_overall as tier_rank
    from contexts
    inner join trending
        on trending.rank_overall <= {{ 2 * top_n }}

    union all

    select
        contexts.root_category_id,
        popularity.item_id,
        popularity.weighted_events as score,
        'popularity' as source,
        'popular overall' as reason,
        3 as tier,
        popularity.rank_overall as tier_rank
    from contexts
    inner join popularity
        on popularity.rank_overall <= {{ 3 * top_n }}

),

first_occurrence as (

    select
        *,
        row_number() over (
            partition by root_category_id, item_id order by tier, tier_rank
        ) as occurrence
    from candidates

),

ranked as (

    select
        *,
        row_number() over (partition by root_category_id order by tier, tier_rank) as rank
    from first_occurrence
    where occurrence = 1

),

final as (

    select
        root_category_id::bigint as root_category_id,
        rank::integer as rank,
        item_id::bigint as item_id,
        score::double precision as score,
        source::text as source,
        reason::text as reason
    from ranked
    where rank <= {{ top_n }}

)

select * from final
