{#
  Ranked lists, one per value of `list_column` (null counts as one list, e.g. the global
  default list): the ranks of a list are exactly 1, 2, ..., its length, and its length is
  exactly `n` (exact=true) or at most `n` (exact=false). Fails one row per bad list, with
  what it holds. One pass over the model and one aggregate per list, so it stays cheap on
  the 14M-row rec_user_recommendations; it proves "exactly N rows per user" and "unique
  (user, rank)" at once (the rank set is compared as a bit mask: n rows whose mask has
  bits 1..n set are ranks 1..n, each once).
    data_tests:
      - recs_ranked_lists:
          arguments: {list_column: user_id, n: "{{ var('top_n') }}", exact: true}
#}
{% test recs_ranked_lists(model, list_column, n, rank_column='rank', exact=true) %}
{%- set n = n | int -%}
{%- if n < 1 or n > 61 -%}
  {{ exceptions.raise_compiler_error("recs_ranked_lists: n must be between 1 and 61, got " ~ n) }}
{%- endif %}

with

lists as (

    select
        {{ list_column }} as list_key,
        count(*) as n_rows,
        min({{ rank_column }}) as min_rank,
        max({{ rank_column }}) as max_rank,
        bit_or(case when {{ rank_column }} between 1 and 61 then 1::bigint << {{ rank_column }} else 0 end) as rank_mask
    from {{ model }}
    group by {{ list_column }}

)

select *
from lists
where min_rank < 1
    or max_rank > {{ n }}
    or rank_mask <> case when n_rows <= 61 then (1::bigint << (n_rows::integer + 1)) - 2 end
    or n_rows {{ '<>' if exact else '>' }} {{ n }}

{% endtest %}
