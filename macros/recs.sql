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

{#
  Decay frames: what makes the decayed sums incremental.

  A decayed score anchored at A, sum(w * 0.5 ^ ((A - t) / h)), changes in every row when A
  moves (A is the latest event, so every new day moves it). The same sum in a fixed frame R,
  sum(w * 0.5 ^ ((R - t) / h)), changes only for the keys that get new events, and
  score(A) = score(R) * 0.5 ^ ((A - R) / h) exactly as real numbers. So the incremental
  models (int_item_event_totals, int_user_category_affinity) store the sums in frame R and
  recompute only the keys with new events; the marts rescale to the anchor when they read
  them (aisle_decay_rescale).

  R is the anchor rounded down to a grid of 8 half-lives from the Unix epoch (56 days for a
  7-day half-life): it depends on the anchor alone, so a full refresh and an incremental run
  with the same anchor use the same R and give the same rows, bit for bit (the terms are
  still rounded to 2^-32 and summed as integers, now in frame R). When the anchor crosses a
  grid point, or a half-life or an event weight changes, the stored sums are in another frame
  (aisle_decay_signature differs) and the incremental run recomputes every key. Terms in
  frame R are at most 2^8 times their weight (events after R), so the 2^-32-rounded
  integers stay far from bigint's range for any weight below 2^20; for events before R they
  are as precise as in frame A or more (A >= R).
#}
{% macro aisle_decay_frame_ts(anchor, half_life_days) -%}
  {{ return(adapter.dispatch('aisle_decay_frame_ts')(anchor, half_life_days)) }}
{%- endmacro %}

{% macro default__aisle_decay_frame_ts(anchor, half_life_days) -%}
  timestamp_seconds(cast(floor(unix_seconds({{ anchor }}) / {{ aisle_decay_grid_seconds(half_life_days) }}) * {{ aisle_decay_grid_seconds(half_life_days) }} as int64))
{%- endmacro %}

{% macro postgres__aisle_decay_frame_ts(anchor, half_life_days) -%}
  to_timestamp(floor(date_part('epoch', {{ anchor }}) / {{ aisle_decay_grid_seconds(half_life_days) }}) * {{ aisle_decay_grid_seconds(half_life_days) }})
{%- endmacro %}

{# The frame grid's step in seconds: 8 half-lives. #}
{% macro aisle_decay_grid_seconds(half_life_days) -%}
  {{- (8 * 86400 * (half_life_days | float)) ~ '' -}}
{%- endmacro %}

{# A bigint that differs whenever a stored decayed sum would: the frame, the half-life, the
   three event weights (`weights`: the one-row relation of aisle_event_weights_row) and any
   `extra` setting of the model. #}
{% macro aisle_decay_signature(frame_ts, half_life_days, weights='weights', extra='') -%}
  {{ aisle_hash64(texts=["concat_ws('|', cast(" ~ aisle_timestamptz_to_epoch_ms(frame_ts) ~ " as varchar), '" ~ half_life_days ~ "', cast("
      ~ weights ~ ".w_view as varchar), cast(" ~ weights ~ ".w_addtocart as varchar), cast("
      ~ weights ~ ".w_transaction as varchar), '" ~ extra ~ "')"]) }}
{%- endmacro %}

{# A sum stored in frame `frame_ts` (aisle_decay_frame_ts), rescaled to the anchor. #}
{% macro aisle_decay_rescale(frame_sum, frame_ts, anchor, half_life_days) -%}
  ({{ frame_sum }} * {{ aisle_decay_factor(frame_ts, anchor, half_life_days) }})
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
