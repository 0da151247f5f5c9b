{#
  Fails every row that is in the model but not in compare_model, or the other way round
  (EXCEPT ALL both ways, so duplicates count). `columns` restricts the comparison to
  some columns (default: all of the model's columns, in order).
#}
{% test equal_rows(model, compare_model, columns=none) %}

{%- set cols = (columns | join(', ')) if columns else '*' %}

with

a as (select {{ cols }} from {{ model }}),

b as (select {{ cols }} from {{ compare_model }}),

only_in_model as (select * from a except all select * from b),

only_in_compare as (select * from b except all select * from a)

select 'only in model' as side, * from only_in_model
union all
select 'only in compare_model' as side, * from only_in_compare

{% endtest %}
