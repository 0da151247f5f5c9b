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
  exception when duplicate_object then null;  -- a concurrent build created it first
  end
  $$;
  {%- endif -%}
{%- endmacro %}
