{{
  config(
    materialized='aisle_bulk_table',
    contract={'enforced': true},
    indexes=[
      {'columns': ['user_id', 'item_id'], 'unique': true},
    ],
    post_hook=["analyze {{ this }}"],
  )
}}

{#- The hybrid recommendations: exactly top_n distinct items for every known visitor.
    See _serving__models.yml for the definition; in short, in this order:
      1. recent intent (var recent_intent_candidates): the visitor's viewed or carted items,
         not purchased, not known unavailable, by intent score (rec_user_item_interactions);
      2. category CF: the merge of the candidate lists (rec_category_candidates) of the
         categories the visitor browsed, weighted by affinity (aisle_user_cf_ctes);
      3. top-ups when the list is still short: trending items of the visitor's categories
         (category_trending), then global trending, then popularity.
    Everywhere: no item known unavailable, no purchased item (no touched item at all when
    recommend_viewed_items is false), no duplicate.

    Performance (1.4M visitors, 14M rows at full scale): the ~90% of visitors with a single
    browsed category take their rows with one hash join against the prefixes of their
    category's list (the fast path in aisle_user_cf_ctes); only the others are aggregated and
    sorted. The recent-intent, category-CF and top-up rows are written one part after the
    other, each in visitor order, so a lookup (unique index on (user_id, item_id)) reads a
    visitor's rows from at most three places: a few pages.

    With var evaluation_users set (`aisle evaluate`: the schema.table of its test users), the
    interactions, and so the profiles, hold only those visitors (aisle_evaluation_users): the
    lists are computed for the known visitors among them alone, by the same SQL, with the same
    rows as in an unrestricted build. -#}
{%- set s = aisle_serving_settings() -%}
{%- set top_n = s.top_n %}

with

{{ aisle_user_cf_ctes(s) }},

{% if s.recent_intent %}
intent_rows as (

    select
        user_id,
        intent_rank as rank,
        item_id,
        intent_score as score,
        case when n_carts > 0 then 'you added this to your cart recently' else 'you viewed this recently' end
            as reason
    from {{ ref('rec_user_item_interactions') }} as interactions
    {%- if s.min_events > 1 %}
    -- only known visitors (with min_events <= 1 every visitor with an event is known)
    where exists (
        select 1
        from {{ ref('rec_user_profiles') }} as profiles
        where profiles.user_id = interactions.user_id
    )
        and intent_rank <= {{ top_n }}
    {%- else %}
    where intent_rank <= {{ top_n }}
    {%- endif %}

),
{% endif %}

-- Top-ups, for the visitors whose recent-intent and category-CF rows are fewer than top_n
-- (a handful: mostly visitors who only saw items without a category).
short_users as (

    select
        general_users.user_id,
        general_users.n_excluded,
        general_users.n_intent + coalesce(cf_counts.n_cf, 0) as n_filled
    from general_users
    left join cf_counts
        on general_users.user_id = cf_counts.user_id
    where general_users.n_intent + coalesce(cf_counts.n_cf, 0) < {{ top_n }}

),

trending as (

    select
        trending.item_id,
        trending.category_id,
        trending.trending_score,
        row_number() over (order by trending.trending_score desc, trending.item_id) as rank_overall,
        row_number() over (
            partition by trending.category_id
            order by trending.trending_score desc, coalesce(popularity.weighted_events, 0) desc, trending.item_id
        ) as rank_in_category
    from {{ ref('rec_item_trending') }} as trending
    left join {{ ref('rec_item_popularity') }} as popularity
        on trending.item_id = popularity.item_id
    where trending.is_available is not false

),

popularity as (

    select
        item_id,
        weighted_events,
        row_number() over (order by weighted_events desc, item_id) as rank_overall
    from {{ ref('rec_item_popularity') }}
    where is_available is not false

),

short_user_categories as (

    select
        short_users.user_id,
        short_users.n_excluded,
        affinity.category_id,
        row_number() over (
            partition by short_users.user_id order by affinity.affinity_score desc, affinity.category_id
        ) as category_order
    from short_users
    inner join affinity
        on short_users.user_id = affinity.user_id

),

-- Each tier is read to a depth of 2 x top_n + |excluded|: enough to fill the list even if
-- every excluded item and every item already in the list comes first.
short_user_depths as (

    select
        short_users.user_id,
        depth.tier_rank
    from short_users
    cross join lateral generate_series(1, {{ 2 * top_n }} + short_users.n_excluded) as depth (tier_rank)

),

topup_candidates as (

    select
        short_user_categories.user_id,
        trending.item_id,
        trending.trending_score as score,
        'category_trending' as source,
        'trending in category ' || short_user_categories.category_id as reason,
        3 as tier,
        short_user_categories.category_order as order_1,
        trending.rank_in_category as order_2
    from short_user_categories
    inner join trending
        on short_user_categories.category_id = trending.category_id
    where trending.rank_in_category <= {{ 2 * top_n }} + short_user_categories.n_excluded

    union all

    select
        short_user_depths.user_id,
        trending.item_id,
        trending.trending_score as score,
        'trending' as source,
        'trending now' as reason,
        4 as tier,
        0 as order_1,
        trending.rank_overall as order_2
    from short_user_depths
    inner join trending
        on short_user_depths.tier_rank = trending.rank_overall

    union all

    select
        short_user_depths.user_id,
        popularity.item_id,
        popularity.weighted_events as score,
        'popularity' as source,
        'popular overall' as reason,
        5 as tier,
        0 as order_1,
        popularity.rank_overall as order_2
    from short_user_depths
    inner join popularity
        on short_user_depths.tier_rank = popularity.rank_overall

),

-- What a short visitor may not be shown again: excluded items and their CF rows.
short_taken as (

    select
        interactions.user_id,
        interactions.item_id
    from short_users
    inner join {{ ref('rec_user_item_interactions') }} as interactions
        on short_users.user_id = interactions.user_id
    {%- if not s.exclude_interacted %}
    where interactions.n_purchases > 0
    {%- endif %}

    union

    select
        general_rows.user_id,
        general_rows.item_id
    from short_users
    inner join general_rows
        on short_users.user_id = general_rows.user_id

),

topup_allowed as (

    select topup_candidates.*
    from topup_candidates
    left join short_taken
        on topup_candidates.user_id = short_taken.user_id
        and topup_candidates.item_id = short_taken.item_id
    where short_taken.user_id is null

),

topup_ranked as (

    select
        user_id,
        item_id,
        score,
        source,
        reason,
        row_number() over (
            partition by user_id order by tier, order_1, order_2
        ) as topup_rank
    from (
        select
            *,
            row_number() over (partition by user_id, item_id order by tier, order_1, order_2) as occurrence
        from topup_allowed
    ) as occurrences
    where occurrence = 1

),

topup_rows as (

    select
        topup_ranked.user_id,
        short_users.n_filled + topup_ranked.topup_rank as rank,
        topup_ranked.item_id,
        topup_ranked.score,
        topup_ranked.source,
        topup_ranked.reason
    from topup_ranked
    inner join short_users
        on topup_ranked.user_id = short_users.user_id
    where short_users.n_filled + topup_ranked.topup_rank <= {{ top_n }}

),

unioned as (

    {% if s.recent_intent -%}
    select user_id, rank, item_id, score, 'category_cf' as source, reason from intent_rows
    union all
    {% endif -%}
    select user_id, rank, item_id, score, 'category_cf' as source, reason from cf_rows
    union all
    select user_id, rank, item_id, score, source, reason from topup_rows

),

final as (

    select
        user_id::bigint as user_id,
        rank::integer as rank,
        item_id::bigint as item_id,
        score::double precision as score,
        source::text as source,
        reason::text as reason
    from unioned

)

select * from final
