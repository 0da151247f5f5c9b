{{
  config(
    materialized='view',
    contract={'enforced': true},
  )
}}

{#- The hybrid recommendations: exactly top_n distinct items for every known visitor, the one
    relation apps and BI read (definition: macros/recs_hybrid.sql and _serving__models.yml).

    A view over two tables, one per route: rec_user_recs_fast_path (visitors whose list is a
    prefix of one category's list, ~90%) and rec_user_recs_general_path (the others). dbt
    builds the two at the same time on its two threads, about halving the build of the 14M
    rows. Every visitor's rows are in exactly one of them, each with a unique index on
    (user_id, item_id): a lookup `where user_id = ?` is pushed into both branches of the
    union and is one index probe in each. Nothing is computed here; the view runs with its
    owner's rights, so the reader role needs no grant on the two tables. -#}

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
