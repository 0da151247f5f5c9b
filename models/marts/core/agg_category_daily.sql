{#-
  Per UTC day and category (as of the event time; -1 unknown): views, carts, purchases,
  distinct visitors, sessions, converted sessions and the conversion rate (sessions with
  a transaction in the category that day / sessions with any event in it that day).
  See macros/category_daily.sql.
-#}
{{
  config(
    materialized='incremental',
    on_schema_change='append_new_columns',
    incremental_strategy='replace_tail',
    tail_order_by='event_date',
    contract={'enforced': true},
    pre_hook=["{{ aisle_serial_plan() }}", "{{ aisle_full_build_settings(prefer_sort=true, sequential_scans=true) }}"],
    indexes=[
      {'columns': ['event_date', 'category_id'], 'unique': true},
      {'columns': ['category_id']},
    ],
  )
}}

-- depends_on: {{ ref('fct_events') }}

{{ aisle_category_daily('category_id') }}
