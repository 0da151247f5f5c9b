{{
  config(
    materialized='view',
    contract={'enforced': true},
  )
}}

{#- The rows of rec_user_recommendations for the visitors on the fast path (about 90% of the
    known visitors, rec_user_profiles.is_fast): recent intent, then a prefix of the one
    category's candidate list they browsed. A view: each visitor's rows are an array slice of
    one list, computed on read through the indexes of rec_user_profiles (user_id),
    rec_category_candidates (category_id, list_rank) and rec_user_item_interactions
    (user_id, item_id), so a lookup is a few index probes and the build writes nothing (writing
    and indexing these 12M rows cost about 25 s at full scale; computing them all costs about
    5 s). Read rec_user_recommendations, not this view: it is half of it. See
    macros/recs_hybrid.sql. -#}

{{ aisle_hybrid_rows(route='fast') }}
