{{
  config(
    contract={'enforced': true},
    indexes=[
      {'columns': ['category_id', 'list_rank'], 'unique': true},
    ],
  )
}}

{#- The category-CF candidate list of every category, computed once per build (about
    1,700 categories x candidates_per_category rows), so that a visitor's list is only a
    merge of the lists of the categories they browsed.

    1. Each category's own candidates: its items that are not known to be unavailable,
       ranked by trending score, then popularity (weighted events), then item_id; the top
       `candidates_per_category`. An item's weight is its trending score relative to the
       category's best (1 for the top item; 0 when the category has no trending signal).
    2. A category's neighbourhood: itself (similarity 1) and its
       `similar_categories_per_user` most similar categories (the similarity source).
    3. The list of category c: every own candidate of every category in c's neighbourhood,
       scored similarity(c, item's category) x item weight, ranked by that score (ties: the
       more similar category first, then the item's rank in its category, then the lower
       item_id); the top `candidates_per_category`.
    A visitor's category-CF score of an item is then the sum over the categories they
    browsed of affinity x this score (rec_user_recommendations). -#}
{%- set depth = aisle_positive_int_var('candidates_per_category') -%}
{%- if depth > 62 -%}
  {{ exceptions.raise_compiler_error("var candidates_per_category must be at most 62 (the serving models keep list positions in a 64-bit mask), got: " ~ depth) }}
{%- endif -%}
{%- set n_neighbours = aisle_positive_int_var('similar_categories_per_user') -%}

with

similarity as (

    select
        category_id,
        neighbor_category_id,
        similarity
    from {{ source('similarity', 'category_similarity') }}
    where rank <= {{ n_neighbours }}
        and category_id <> neighbor_category_id

),

categories as (

    select category_id
    from {{ ref('dim_categories') }}
    where category_id <> -1

),

trending as (

    select
        item_id,
        category_id,
        trending_score
    from {{ ref('rec_item_trending') }}
    where category_id <> -1
        and is_available is not false

),

popularity as (

    select
        item_id,
        weighted_events
    from {{ ref('rec_item_popularity') }}

),

ranked_items as (

    select
        trending.category_id,
        trending.item_id,
        trending.trending_score,
        row_number() over (
            partition by trending.category_id
            order by trending.trending_score desc, coalesce(popularity.weighted_events, 0) desc, trending.item_id
        ) as rank_in_category,
        max(trending.trending_score) over (partition by trending.category_id) as best_score
    from trending
    left join popularity
        on trending.item_id = popularity.item_id

),

own_candidates as (

    select
        category_id,
        item_id,
        rank_in_category,
        case when best_score > 0 then trending_score / best_score else 0 end as item_weight
    from ranked_items
    where rank_in_category <= {{ depth }}

),

neighbourhood as (

    select
        category_id,
        category_id as item_category_id,
        1.0::double precision as similarity
    from categories

    union all

    select
        category_id,
        neighbor_category_id as item_category_id,
        similarity
    from similarity

),

scored as (

    select
        neighbourhood.category_id,
        own_candidates.item_id,
        neighbourhood.item_category_id,
        neighbourhood.similarity,
        own_candidates.item_weight,
        own_candidates.rank_in_category,
        neighbourhood.similarity * own_candidates.item_weight as cf_weight
    from neighbourhood
    inner join own_candidates
        on neighbourhood.item_category_id = own_candidates.category_id

),

ranked as (

    select
        *,
        row_number() over (
            partition by category_id order by cf_weight desc, similarity desc, rank_in_category, item_id
        ) as list_rank
    from scored

),

final as (

    select
        category_id::bigint as category_id,
        list_rank::integer as list_rank,
        item_id::bigint as item_id,
        item_category_id::bigint as item_category_id,
        similarity::double precision as similarity,
        item_weight::double precision as item_weight,
        cf_weight::double precision as cf_weight
    from ranked
    where list_rank <= {{ depth }}

)

select * from final
