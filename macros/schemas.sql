{#
  Schema naming. Custom schemas are used verbatim (staging, intermediate, marts,
  recs), not prefixed with the target schema, so BI sees stable names.
  A build with the var as_of set is a backtest: every schema gets the suffix
  _bt_<digits of as_of>, so a backtest never touches the production marts.
  python/aisle/config.py:schema_suffix mirrors this; a test keeps them in step.
#}
{% macro aisle_schema_suffix() -%}
  {%- set as_of = var('as_of', none) -%}
  {%- if as_of is none or as_of == '' -%}
  {%- else -%}
    _bt_{{ modules.re.sub('[^0-9]', '', as_of | string) }}
  {%- endif -%}
{%- endmacro %}

{% macro generate_schema_name(custom_schema_name, node) -%}
  {%- set base = custom_schema_name if custom_schema_name is not none else target.schema -%}
  {{ (base ~ aisle_schema_suffix()) | trim }}
{%- endmacro %}
