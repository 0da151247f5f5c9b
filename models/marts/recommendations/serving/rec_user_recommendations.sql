{{
  config(
    materialized='view',
    contract={'enforced': true},
  )
}}

{#- The hybrid recommendations: exactly top_n distinct items for every known visitor, the one
    relation apps and BI read (definition: macros/recs_hybrid.sql and _serving__models.yml).

    A view over the two routes: rec_user_recs_fast_path (a view: visitors whose list is a
    prefix of one category's list, ~90%, computed on read from rec_user_profiles and the
    category lists) and rec_user_recs_general_path (a table: the others). Every visitor's rows
    come from exactly one of them. A lookup `where user_id = ?` is pushed into both branches of
    the union: a few index probes on the fast route (profile, category list, recent-intent
    items) and one probe of the general table's unique index on (user_id, item_id). The views
    run with their owner's rights, so the reader role needs no grant on the tables below. -#}

with

fast_path as (

    select user_id, rank, item_id, score, source, reason
    from {{ ref('rec_user_recs_fast_path') }}

),

general_path as (

    select user_id, rank, item_id, score, source, reason
    from {{ ref('rec_user_recs_general_path') }}

),

final as (

    select * from fast_path
    union all
    select * from general_path

)

select * from final
