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

{#- The rows of rec_user_recommendations for the visitors on the fast path (about 90% of the
    known visitors, rec_user_profiles.is_fast): recent intent, then a prefix of the one
    category's candidate list they browsed, by one hash join and an unnest of that list's
    array (parallel query). Read rec_user_recommendations, not this table: it is half of it.
    See macros/recs_hybrid.sql. -#}
{{ aisle_hybrid_rows(route='fast') }}
