{#- No parallel workers (aisle_serial_plan): dbt builds rec_user_profiles on its other thread
    at the same time, so both cores are busy, and workers only add contention (measured: the
    serving build ~4 s faster without them). Sorted grouping, not hashing: the ~2.2M (visitor, item) groups hardly
    shrink the 2.7M events, and a hash aggregate of them (then a full sort for the window)
    took about twice as long as sorting the events by (user_id, item_id), grouping them in
    that order and ranking each visitor's few rows with an incremental sort. The sorts fit
    in 1 GB of memory (set local: this build's transaction only). -#}
{{
  config(
    indexes=[
      {'columns': ['user_id', 'item_id'], 'unique': true},
    ],
    pre_hook=["{{ aisle_serial_plan() }}"],
    sql_header="set local work_mem = '1GB'; set local enable_hashagg = off;",
  )
}}

-- Built in the serving step, with the models that read it (the pipeline builds
-- `source:similarity+` after the similarity step):
-- depends_on: {{ source('similarity', 'category_similarity') }}

{#- What each visitor did with each item before as_of: one row per (visitor, item) with
    the event counts per type, the recent-intent score and the item's availability. The
    serving models read it for the exclusions (purchased items, and viewed ones when
    recommend_viewed_items is false) and for the recent-intent candidates ("viewed or
    carted recently, not purchased"), ranked by the intent score: the sum of the event
    weights of the visitor's views and carts of the item, each decayed by
    0.5 ^ (age / affinity_half_life_days), anchored like the affinity mart (as_of, or the
    latest event). intent_rank orders the items the visitor may be shown again (not
    purchased, not known unavailable) by that score (ties: the lower item_id). category_id
    is the item's category at the visitor's events (-1 unknown; the lowest when it changed
    between them, category_changed). About one row per 1.25 events. -#}
{#- With var evaluation_users set (`aisle evaluate`), only those visitors' events are read
    (aisle_evaluation_users in macros/recs_serving.sql): the rows of those visitors are the
    same, and every serving model after this one then computes only them. #}

with

{{ aisle_user_item_pair_ctes() }},

final as (

    select
        user_id::bigint as user_id,
        item_id::bigint as item_id,
        coalesce(min_category_id, -1)::bigint as category_id,
        coalesce(min_category_id <> max_category_id, false)::boolean as category_changed,
        n_views::bigint as n_views,
        n_carts::bigint as n_carts,
        n_purchases::bigint as n_purchases,
        intent_score::double precision as intent_score,
        last_event_ts::timestamptz as last_event_ts,
        is_available::boolean as is_available,
        -- the candidates sort first within the visitor's rows (true > false), so their row
        -- numbers are their ranks among the candidates: one window partitioned by user_id
        -- alone, whose sort reuses the (user_id, item_id) order of the groups
        (case when is_intent_candidate then row_number() over (
            partition by user_id order by is_intent_candidate desc, intent_score desc, item_id
        ) end)::integer as intent_rank
    from pairs

)

select * from final
