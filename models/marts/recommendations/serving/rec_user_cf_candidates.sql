{{
  config(
    materialized='view',
    contract={'enforced': true},
  )
}}

{#- Category CF alone, for the evaluation ("Category CF (pure)"): per known visitor, the
    top_n items of the category-CF merge (aisle_user_cf_ctes in macros/recs_serving.sql)
    with the same exclusions as the hybrid's CF part (purchased items; every touched item
    when recommend_viewed_items is false), but no recent-intent rows and no top-ups, so a
    list may be shorter than top_n, or absent. A view: production never reads it, and the
    evaluation reads it once per backtest (computing it costs about what the hybrid does). -#}
{%- set s = aisle_serving_settings() -%}
{#- The evaluation sets var evaluation_users (schema.table of its test users): the view is
    then computed for those visitors only (a filter on the view is not pushed down). The
    interactions are already restricted to them (aisle_evaluation_users); the filter is kept
    so that the view never computes anyone else. -#}
{%- set users = aisle_evaluation_users() -%}

with

{{ aisle_user_cf_ctes(s, pure=true, users=users) }},

final as (

    select
        user_id::bigint as user_id,
        rank::integer as rank,
        item_id::bigint as item_id,
        score::double precision as score,
        reason::text as reason
    from cf_rows

)

select * from final
