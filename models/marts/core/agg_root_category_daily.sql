{#-
  agg_category_daily rolled up to root categories: per UTC day and root category (-1
  unknown). Distinct visitors and sessions are counted at the root level (a session
  touching two categories of one root counts once), so they are not the sums of the
  category rows. See macros/category_daily.sql.
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
      {'columns': ['event_date', 'root_category_id'], 'unique': true},
      {'columns': ['root_category_id']},
    ],
  )
}}

-- depends_on: {{ ref('fct_events') }}

{{ aisle_category_daily('root_category_id') }}
