{#
  The read-only role for BI tools. Created idempotently, NOLOGIN by default (give it
  a login with: alter role aisle_reader login password '...'). It gets USAGE and
  SELECT on the marts schemas only, through the models' `grants` config; it never
  sees raw, staging or intermediate.
#}
{% macro aisle_reader_role() -%}{{ var('reader_role', 'aisle_reader') }}{%- endmacro %}

{% macro aisle_ensure_reader_role() -%}
  {%- if execute -%}
  do $$
  begin
    if not exists (select 1 from pg_roles where rolname = '{{ aisle_reader_role() }}') then
      create role {{ aisle_reader_role() }} nologin;
    end if;
  -- A concurrent build created it first: duplicate_object if it committed before our check,
  -- unique_violation (on pg_authid) if it committed while our CREATE ROLE waited for it.
  exception when duplicate_object or unique_violation then null;
  end
  $$;
  {%- endif -%}
{%- endmacro %}

{#
  USAGE on the schemas of the marts this run built, once per schema at the end of the run
  (on-run-end). Not a per-model post-hook: two models of one schema finishing at the same
  time would both GRANT on the same pg_namespace row, and Postgres fails one of them with
  "tuple concurrently updated".
#}
{% macro aisle_grant_reader_usage(results) -%}
  {%- if execute -%}
    {%- set schemas = [] -%}
    {%- for res in results -%}
      {%- if res.node.resource_type == 'model' and 'marts' in res.node.fqn and res.status == 'success'
            and res.node.schema not in schemas -%}
        {%- do schemas.append(res.node.schema) -%}
      {%- endif -%}
    {%- endfor -%}
    {%- for schema in schemas | sort %}
  grant usage on schema {{ adapter.quote(schema) }} to {{ aisle_reader_role() }};
    {%- endfor -%}
  {%- endif -%}
{%- endmacro %}
