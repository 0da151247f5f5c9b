{#
  The hybrid lists (rec_user_recommendations) of one route's visitors, as a full query.
  route='fast': the visitors whose category-CF rows come from one browsed category whose
  list alone fills their list (rec_user_profiles.is_fast, about 90%); their rows are recent
  intent, then a prefix of that list, never top-ups. route='general': every other known
  visitor; recent intent, then the merged lists of their categories, then the top-ups.
  The fast route is a view (rec_user_recs_fast_path): its rows are a few array slices per
  visitor, computed on read from rec_user_profiles and the category lists, so a lookup costs
  a few index probes and a build writes nothing for 90% of the visitors (writing and indexing
  their 12M rows took longer than computing them). The general route is a table
  (rec_user_recs_general_path): its merge and ranking cost too much per read.

  The definition, in this order:
    1. recent intent (var recent_intent_candidates): the visitor's viewed or carted items,
       not purchased, not known unavailable, by intent score (rec_user_item_interactions);
    2. category CF: the merge of the candidate lists (rec_category_candidates) of the
       categories the visitor browsed, weighted by affinity (aisle_user_cf_ctes);
    3. top-ups when the list is still short: trending items of the visitor's categories
       (category_trending), then global trending, then popularity.
  Everywhere: no item known unavailable, no purchased item (no touched item at all when
  recommend_viewed_items is false), no duplicate.
#}
{# The reasons people read, written once: a browsed category, and recent intent. #}
{% macro aisle_reason_browsed(category_id) -%}
'because you browsed category ' || {{ category_id }}
{%- endmacro %}

{% macro aisle_reason_intent(is_cart) -%}
case when {{ is_cart }} then 'you added this to your cart recently' else 'you viewed this recently' end
{%- endmacro %}

{% macro aisle_hybrid_rows(route) -%}
{%- if route not in ('fast', 'general') -%}
  {{ exceptions.raise_compiler_error("aisle_hybrid_rows: route must be 'fast' or 'general', got: " ~ route) }}
{%- endif -%}
{%- set s = aisle_serving_settings() -%}
{%- set top_n = s.top_n -%}
{%- set fast = route == 'fast' %}

with

{#- the fast route is a view: only the CTEs it reads, so that a lookup plans quickly #}
{{ aisle_fast_rows_cte(s) if fast else aisle_user_cf_ctes(s) }},

{% if s.recent_intent %}
intent_rows as (

    select
        interactions.user_id,
        interactions.intent_rank as rank,
        interactions.item_id,
        interactions.intent_score as score,
        interactions.n_carts > 0 as is_cart,
        {{ aisle_reason_intent('interactions.n_carts > 0') }} as reason
    from {{ ref('rec_user_item_interactions') }} as interactions
    -- the route's visitors only; profiles hold exactly the known visitors
    inner join {{ ref('rec_user_profiles') }} as profiles
        on interactions.user_id = profiles.user_id
        and {{ '' if fast else 'not ' }}profiles.is_fast
    where interactions.intent_rank <= {{ top_n }}

),
{% endif %}

{% if not fast %}
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

short_user_categories as (

    select
        short_users.user_id,
        short_users.n_excluded,
        browsed.category_id,
        row_number() over (
            partition by short_users.user_id order by browsed.affinity_score desc, browsed.category_id
        ) as category_order
    from short_users
    -- through the (user_id, category_id) index, not a scan of every visitor's affinities
    cross join lateral (
        select
            affinity.category_id,
            affinity.affinity_score
        from affinity
        where affinity.user_id = short_users.user_id
        offset 0
    ) as browsed

),

-- How deep any short visitor reads a global tier (see short_user_depths).
topup_depth as (

    select {{ 2 * top_n }} + coalesce(max(n_excluded), 0) as depth
    from short_users

),

-- Trending within the short visitors' own categories only, ranked by trending, then
-- popularity, then item_id; and the global tiers only as deep as they are read (a bounded
-- sort, not a ranking of every item).
trending_in_category as (

    select
        trending.item_id,
        trending.category_id,
        trending.trending_score,
        row_number() over (
            partition by trending.category_id
            order by trending.trending_score desc, coalesce(popularity.weighted_events, 0) desc, trending.item_id
        ) as rank_in_category
    from {{ ref('rec_item_trending') }} as trending
    left join {{ ref('rec_item_popularity') }} as popularity
        on trending.item_id = popularity.item_id
    where trending.is_available is not false
        and trending.category_id in (select category_id from short_user_categories)

),

trending as (

    select
        item_id,
        trending_score,
        row_number() over (order by trending_score desc, item_id) as rank_overall
    from (
        select
            item_id,
            trending_score
        from {{ ref('rec_item_trending') }}
        where is_available is not false
        order by trending_score desc, item_id
        limit (select depth from topup_depth)
    ) as top_items

),

popularity as (

    select
        item_id,
        weighted_events,
        row_number() over (order by weighted_events desc, item_id) as rank_overall
    from (
        select
            item_id,
            weighted_events
        from {{ ref('rec_item_popularity') }}
        where is_available is not false
        order by weighted_events desc, item_id
        limit (select depth from topup_depth)
    ) as top_items

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
        trending_in_category.item_id,
        trending_in_category.trending_score as score,
        'category_trending' as source,
        'trending in category ' || short_user_categories.category_id as reason,
        3 as tier,
        short_user_categories.category_order as order_1,
        trending_in_category.rank_in_category as order_2
    from short_user_categories
    inner join trending_in_category
        on short_user_categories.category_id = trending_in_category.category_id
    where trending_in_category.rank_in_category <= {{ 2 * top_n }} + short_user_categories.n_excluded

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

{% endif %}
unioned as (

    {% if fast -%}
    {#- The fast route carries what its reason is made of, not the text: the view builds the
        text at the top, where a query that does not read it (the completeness test, say)
        never builds it for the 12M rows. -#}
    {% if s.recent_intent -%}
    select user_id, rank, item_id, score, null::bigint as browsed_category_id, is_cart from intent_rows
    union all
    {% endif -%}
    select user_id, rank, item_id, score, browsed_category_id, null::boolean as is_cart from fast_rows
    where rank <= {{ top_n }}
    {%- else -%}
    {% if s.recent_intent -%}
    select user_id, rank, item_id, score, 'category_cf' as source, reason from intent_rows
    union all
    {% endif -%}
    select user_id, n_intent + cf_rank as rank, item_id, score, 'category_cf' as source, reason from general_rows
    union all
    select user_id, rank, item_id, score, source, reason from topup_rows
    {%- endif %}

),

final as (

    select
        user_id::bigint as user_id,
        rank::integer as rank,
        item_id::bigint as item_id,
        score::double precision as score,
        {%- if fast %}
        'category_cf'::text as source,
        (case
            when browsed_category_id is not null then {{ aisle_reason_browsed('browsed_category_id') }}
            else {{ aisle_reason_intent('is_cart') }}
        end)::text as reason
        {%- else %}
        source::text as source,
        reason::text as reason
        {%- endif %}
    from unioned

)

select * from final
{%- endmacro %}
