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

{# The event weights (the seed `event_weights`, passed as `weights_relation`) as one row
   (w_view, w_addtocart, w_transaction; a type missing from the seed weighs 0). Cross-joined
   to the events, it gives each event its weight without a per-event join. #}
{% macro aisle_event_weights_row(weights_relation) -%}
    select
        coalesce(max(weight) filter (where event_type = 'view'), 0)::double precision as w_view,
        coalesce(max(weight) filter (where event_type = 'addtocart'), 0)::double precision as w_addtocart,
        coalesce(max(weight) filter (where event_type = 'transaction'), 0)::double precision as w_transaction
    from {{ weights_relation }}
{%- endmacro %}

{# The weight of one event, given the one-row relation `weights` made by aisle_event_weights_row. #}
{% macro aisle_event_weight(event_type, weights='weights') -%}
    case {{ event_type }}
        when 'view' then {{ weights }}.w_view
        when 'addtocart' then {{ weights }}.w_addtocart
        when 'transaction' then {{ weights }}.w_transaction
        else 0::double precision
    end
{%- endmacro %}

{# A pre-hook for the recommendation marts, int_item_event_totals and the two daily
   aggregates: no parallel workers for this model's statements (SET LOCAL, so only its
   own transaction). Their aggregates have nearly as many groups as input rows (user x
   category, session cells) or need a sort (distinct visitors), so partial aggregation in
   workers reduces little and the final step redoes the work; and dbt already runs two
   models at once on two cores. Measured at full scale: the affinity aggregate took 4x
   longer with two workers than without; the two daily aggregates, built side by side at
   the end of the full build, took 3.6 s and 3.1 s serial instead of 4.3 s and 3.8 s. #}
{% macro aisle_serial_plan() -%}
  {{ return(adapter.dispatch('aisle_serial_plan')()) }}
{%- endmacro %}

{% macro default__aisle_serial_plan() -%}
  select 1
{%- endmacro %}

{% macro postgres__aisle_serial_plan() -%}
  set local max_parallel_workers_per_gather = 0
{%- endmacro %}

{# The three deterministic ranks of an item mart (overall, in category, in root):
   higher score first, ties broken by the lower item_id. #}
{% macro aisle_item_ranks(score) -%}
        (row_number() over (order by {{ score }} desc, item_id))::integer as rank_overall,
        (row_number() over (partition by category_id order by {{ score }} desc, item_id))::integer as rank_in_category,
        (row_number() over (partition by root_category_id order by {{ score }} desc, item_id))::integer as rank_in_root
{%- endmacro %}
