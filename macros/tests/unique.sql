{#
  The built-in `unique` test, made cheap where Postgres already guarantees it.

  When the tested relation has a valid, immediate, non-partial unique btree index on
  exactly the tested column, Postgres has rejected every duplicate at write time, so
  the table cannot hold one; the test then only checks that index in the catalog (an
  uncorrelated condition that Postgres evaluates once, as a one-time filter: the table
  is not scanned). Otherwise (no such index, a view, or a `where` config turning the
  model into a subquery) it is dbt's usual GROUP BY. Both paths pass exactly when the
  non-null values are unique, like dbt's own test. At full scale this saves a 1-2 s
  hash aggregation per big grain.
#}
{% macro postgres__test_unique(model, column_name) %}

{%- if model is not string and model.identifier is defined and model.identifier -%}
select
    {{ column_name }} as unique_field,
    count(*) as n_records
from {{ model }}
where {{ column_name }} is not null
    and not {{ aisle_has_unique_index(model, [column_name]) }}
group by {{ column_name }}
having count(*) > 1
{%- else -%}
{{ dbt.default__test_unique(model, column_name) }}
{%- endif %}

{% endmacro %}

{# A SQL condition: the relation has a valid, immediate, non-partial unique btree index
   whose key is exactly these columns (in any order, no INCLUDE columns). #}
{% macro aisle_has_unique_index(relation, columns) -%}
  {%- set names = [] -%}
  {%- for c in columns | sort %}{% do names.append("'" ~ (c | replace('"', '') | replace("'", "''")) ~ "'") %}{% endfor -%}
exists (
        select 1
        from pg_catalog.pg_index as i
        inner join pg_catalog.pg_class as c
            on c.oid = i.indexrelid
        inner join pg_catalog.pg_am as am
            on am.oid = c.relam
        where i.indrelid = to_regclass('{{ adapter.quote(relation.schema) }}.{{ adapter.quote(relation.identifier) }}')
            and i.indisunique
            and i.indisvalid
            and i.indimmediate
            and i.indpred is null
            and i.indexprs is null
            and am.amname = 'btree'
            and i.indnatts = {{ columns | length }}
            and array(
                select a.attname::text
                from pg_catalog.pg_attribute as a
                where a.attrelid = i.indrelid
                    and a.attnum = any(i.indkey::int2[])
                order by a.attname::text collate "C"
            ) = array[{{ names | join(', ') }}]::text[]
    )
{%- endmacro %}
