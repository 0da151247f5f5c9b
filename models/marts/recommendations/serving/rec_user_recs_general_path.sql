{{
  config(
    materialized='aisle_bulk_table',
    contract={'enforced': true},
    indexes=[
      {'columns': ['user_id', 'item_id'], 'unique': true},
    ],
    pre_hook=["{{ aisle_serial_plan() }}"],
    sql_header="set local enable_hashagg = off;",
  )
}}

{#- No parallel workers (aisle_serial_plan): dbt runs the fast route's completeness test on
    its other thread meanwhile, so workers only add contention. Sorted grouping (no hash
    aggregation): the visitors' pairs then come in user_id order from the affinity index, each
    visitor's entries are grouped and ranked after small per-visitor sorts (incremental
    sort), and nothing spills; with hashing allowed the planner hashed the 2.9M entries
    (spilling to disk) and sorted them all for the ranking (about 20% slower at full scale). -#}

{#- The rows of rec_user_recommendations for every known visitor off the fast path (about 10%:
    several browsed categories, a short list, or no category at all): recent intent, then the
    merge of their categories' candidate lists, then the top-ups (category trending, trending,
    popularity). A table: its merge and ranking cost too much to redo on each read (the fast
    route, rec_user_recs_fast_path, is a view). dbt runs the fast route's completeness test on
    its second thread while this builds. Read rec_user_recommendations, not this table. See
    macros/recs_hybrid.sql. -#}
{{ aisle_hybrid_rows(route='general') }}
