{#
  Fails (one row with both counts) when the model and compare_model have different
  row counts.
#}
{% test equal_rowcount(model, compare_model) %}

with

left_count as (select count(*) as n_rows from {{ model }}),

right_count as (select count(*) as n_rows from {{ compare_model }})

select
    left_count.n_rows as model_rows,
    right_count.n_rows as compare_model_rows
from left_count
cross join right_count
where left_count.n_rows <> right_count.n_rows

{% endtest %}
