{#
  The combination of `columns` is unique because PostgreSQL enforces it: the model has a
  valid unique index on exactly these columns (any order; no expression, no predicate).
  For the big serving tables this replaces a GROUP BY over millions of rows: the index is
  built anyway (it serves the lookups) and a duplicate would have failed the build.
  Fails (one row) when no such index exists.
    data_tests:
      - recs_unique_index:
          arguments: {columns: [user_id, item_id]}
#}
{% test recs_unique_index(model, columns) %}
{%- set wanted = columns | map('lower') | sort -%}

with

unique_indexes as (

    select
        index_class.relname as index_name,
        array(
            select attribute.attname::text
            from unnest(pg_index.indkey::smallint[]) with ordinality as key (attnum, position)
            inner join pg_catalog.pg_attribute as attribute
                on attribute.attrelid = pg_index.indrelid
                and attribute.attnum = key.attnum
            where key.position <= pg_index.indnkeyatts
            order by attribute.attname::text
        ) as index_columns
    from pg_catalog.pg_index
    inner join pg_catalog.pg_class as table_class
        on pg_index.indrelid = table_class.oid
    inner join pg_catalog.pg_namespace as namespace
        on table_class.relnamespace = namespace.oid
    inner join pg_catalog.pg_class as index_class
        on pg_index.indexrelid = index_class.oid
    where namespace.nspname = '{{ model.schema }}'
        and table_class.relname = '{{ model.identifier }}'
        and pg_index.indisunique
        and pg_index.indisvalid
        and pg_index.indpred is null
        and pg_index.indexprs is null
        and pg_index.indnkeyatts = {{ wanted | length }}

)

select
    '{{ model }}' as relation,
    '{{ wanted | join(", ") }}' as wanted_unique_columns
where not exists (
    select 1
    from unique_indexes
    where index_columns = array[{% for c in wanted %}'{{ c }}'{{ "," if not loop.last }}{% endfor %}]::text[]
)

{% endtest %}
