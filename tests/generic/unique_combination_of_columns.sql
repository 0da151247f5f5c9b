{#
  Fails every combination of the columns that appears more than once (the grain of a
  model whose key spans several columns). Like `unique`, rows with a null in any of
  the columns are not compared (test those columns with not_null).

  When the table has a valid, immediate, non-partial unique btree index on exactly
  these columns, Postgres has already rejected every duplicate, so the test only checks
  that index in the catalog (the table is not scanned); see macros/tests/unique.sql.
#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

select
    {{ combination_of_columns | join(', ') }},
    count(*) as n_rows
from {{ model }}
where {% for column in combination_of_columns %}{{ column }} is not null and {% endfor %}true
{%- if model is not string and model.identifier is defined and model.identifier %}
    and not {{ aisle_has_unique_index(model, combination_of_columns) }}
{%- endif %}
group by {{ combination_of_columns | join(', ') }}
having count(*) > 1

{% endtest %}
