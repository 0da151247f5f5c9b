{#- The planner prefers to sort the 2.2M pairs to merge-join the 60K list entries, or
    to probe an index for each of them; a hash join is several times cheaper. With hash
    aggregation allowed it hashes the 2.2M interactions (not the 60K entries) and groups the
    1.4M visitors, about 1.5x slower than sorted grouping. No parallel workers
    (aisle_serial_plan): dbt builds rec_user_item_interactions on its other thread at the same
    time, so workers only add contention. The sorts fit in memory (set local: this build's
    transaction only). -#}
{{
  config(
    indexes=[
      {'columns': ['user_id'], 'unique': true},
    ],
    pre_hook=["{{ aisle_serial_plan() }}"],
    sql_header="set local enable_mergejoin = off; set local enable_nestloop = off; set local enable_hashagg = off; set local work_mem = '1GB';",
  )
}}

{#- One row per known visitor (at least known_user_min_events events before as_of): what
    the serving models need to route them and fill their list, from one aggregation of their
    (visitor, item) pairs. The pairs are those of rec_user_item_interactions
    (aisle_user_item_pair_ctes, macros/recs_serving.sql), computed again here rather than read
    from that table, so that dbt builds the two models at the same time (11 s for both at full
    scale, against 16 s one after the other):
      - the category they browsed when it is a single one (about 90% of visitors), with
        their affinity to it;
      - how many items they touched, bought, and may be shown again (recent intent);
      - for a single-category visitor, which positions of that category's candidate list
        (rec_category_candidates) hold an item they touched (touched_mask) or bought
        (purchased_mask): bit p set = position p (1-based; lists are at most 62 long);
      - their route in the hybrid (is_fast, bound) and in the pure category-CF list
        (is_fast_pure, bound_pure): see aisle_user_cf_ctes (macros/recs_serving.sql).
    Materialized on its own so that the planner of the big serving query sees real row
    counts for each route. -#}
{%- set s = aisle_serving_settings() -%}
{%- set top_n = s.top_n %}

with

{{ aisle_user_item_pair_ctes() }},

interactions as (

    select
        user_id,
        item_id,
        coalesce(min_category_id, -1) as category_id,
        coalesce(min_category_id <> max_category_id, false) as category_changed,
        n_views + n_carts + n_purchases as n_events,
        n_purchases,
        is_intent_candidate
    from pairs

),

lists as (

    select
        category_id,
        list_rank,
        item_id
    from {{ ref('rec_category_candidates') }}

),

list_lengths as (

    select
        category_id,
        count(*) as n_items
    from {{ ref('rec_category_candidates') }}
    group by category_id

),

-- A single-category visitor's touched items all had that category at their events, so
-- the list holding them is the list of the item's category at the event.
per_user as (

    select
        interactions.user_id,
        sum(interactions.n_events) as n_events,
        count(*) as n_touched,
        count(*) filter (where interactions.n_purchases > 0) as n_purchased,
        count(*) filter (where interactions.is_intent_candidate) as n_intent_candidates,
        min(interactions.category_id) filter (where interactions.category_id <> -1) as min_category_id,
        max(interactions.category_id) filter (where interactions.category_id <> -1) as max_category_id,
        bool_or(interactions.category_changed) as category_changed,
        coalesce(bit_or(1::bigint << lists.list_rank), 0) as touched_mask,
        coalesce(bit_or(1::bigint << lists.list_rank) filter (where interactions.n_purchases > 0), 0)
            as purchased_mask
    from interactions
    left join lists
        on interactions.category_id = lists.category_id
        and interactions.item_id = lists.item_id
    group by interactions.user_id

),

known as (

    select
        user_id,
        n_events,
        n_touched,
        n_purchased,
        n_intent_candidates,
        coalesce(min_category_id = max_category_id and not category_changed, false) as is_single_category,
        case when min_category_id = max_category_id and not category_changed then min_category_id end
            as category_id,
        case when min_category_id = max_category_id and not category_changed then touched_mask else 0 end
            as touched_mask,
        case when min_category_id = max_category_id and not category_changed then purchased_mask else 0 end
            as purchased_mask
    from per_user
    where n_events >= {{ s.min_events }}

),

with_affinity as (

    select
        known.*,
        affinity.affinity_score,
        list_lengths.n_items,
        {{ aisle_serving_n_intent(s, 'known') }} as n_intent,
        {{ aisle_serving_n_excluded(s, 'known') }} as n_excluded,
        {{ aisle_serving_skip_mask(s, 'known') }} as skip_mask,
        {{ aisle_serving_n_excluded(s, 'known', pure=true) }} as n_excluded_pure,
        {{ aisle_serving_skip_mask(s, 'known', pure=true) }} as skip_mask_pure
    from known
    left join {{ ref('rec_user_category_affinity') }} as affinity
        on known.user_id = affinity.user_id
        and known.category_id = affinity.category_id
    left join list_lengths
        on known.category_id = list_lengths.category_id

),

routed as (

    select
        *,
        bit_count(skip_mask::bit(64)) as n_skips,
        bit_count(skip_mask_pure::bit(64)) as n_skips_pure
    from with_affinity

),

final as (

    select
        user_id::bigint as user_id,
        n_events::bigint as n_events,
        n_touched::integer as n_touched,
        n_purchased::integer as n_purchased,
        n_intent_candidates::integer as n_intent_candidates,
        is_single_category::boolean as is_single_category,
        category_id::bigint as category_id,
        affinity_score::double precision as affinity_score,
        touched_mask::bigint as touched_mask,
        purchased_mask::bigint as purchased_mask,
        n_intent::integer as n_intent,
        n_excluded::integer as n_excluded,
        skip_mask::bigint as skip_mask,
        -- hybrid: one category whose list alone fills the list after the recent-intent rows
        coalesce(is_single_category and n_items - n_skips >= {{ top_n }} - n_intent, false)::boolean as is_fast,
        ({{ top_n }} - n_intent + n_skips)::integer as bound,
        n_excluded_pure::integer as n_excluded_pure,
        skip_mask_pure::bigint as skip_mask_pure,
        -- category CF alone: one category with a list (which may be short)
        coalesce(is_single_category and n_items > 0, false)::boolean as is_fast_pure,
        least({{ top_n }} + n_skips_pure, n_items)::integer as bound_pure
    from routed

)

select * from final
