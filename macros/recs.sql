{#
  Helpers for the recommendation marts (models/marts/recommendations).
  Postgres-specific SQL sits behind adapter.dispatch, with a portable default.
#}

{# The decay factor 0.5 ^ (age / half-life) of an event at `ts`, for a decay anchored
   at `anchor` (both timestamptz expressions). Exactly 1 at the anchor and exactly 0.5
   one half-life before it. #}
{% macro aisle_decay_factor(ts, anchor, half_life_days) -%}
  {{ return(adapter.dispatch('aisle_decay_factor')(ts, anchor, half_life_days)) }}
{%- endmacro %}

{% macro default__aisle_decay_factor(ts, anchor, half_life_days) -%}
  power(0.5, {{ dbt.datediff(ts, anchor, 'second') }} / ({{ half_life_days }} * 86400.0))
{%- endmacro %}

{% macro postgres__aisle_decay_factor(ts, anchor, half_life_days) -%}
  {#- date_part (not extract) returns double precision, which is much faster than numeric. -#}
  power(0.5::double precision, date_part('epoch', {{ anchor }} - {{ ts }}) / ({{ half_life_days }} * 86400.0::double precision))
{%- endmacro %}

{# A sum of double precision terms that does not depend on the order of the rows.
   A plain float sum differs in the last bits when a parallel plan splits the rows
   differently, and a backtest rebuilt on the same data must give identical rows. Each
   term is rounded to a multiple of 2^-32 (about 2.3e-10) and the integers are summed
   exactly (Postgres sums bigint in 128-bit integers). #}
{% macro aisle_exact_sum(expression) -%}
  {{ return(adapter.dispatch('aisle_exact_sum')(expression)) }}
{%- endmacro %}

{% macro default__aisle_exact_sum(expression) -%}
  sum({{ expression }})
{%- endmacro %}

{% macro postgres__aisle_exact_sum(expression) -%}
  (sum(round(({{ expression }}) * 4294967296.0)::bigint)::double precision / 4294967296.0)
{%- endmacro %}

{# A half-life var, validated: a positive number of days. #}
{% macro aisle_half_life_days(var_name) -%}
  {%- set value = var(var_name) -%}
  {%- if value is none or (value | string) | trim == '' or (value | float) <= 0 -%}
    {{ exceptions.raise_compiler_error("var " ~ var_name ~ " must be a positive number of days, got: " ~ value) }}
  {%- endif -%}
  {{ return(value | float) }}
{%- endmacro %}
