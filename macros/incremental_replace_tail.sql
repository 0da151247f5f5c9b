{#
  Incremental strategy 'replace_tail', for models where a new event can change a
  visitor's rows from some point in time on (sessions that merge or grow).

  The model's incremental SQL returns, for each visitor it touches, every row from
  that visitor's recomputation point on. The strategy deletes the target's rows of
  those visitors from the same point on (the earliest tail_order_by value in the new
  rows of the visitor) and inserts the new rows, so rows that disappear (two sessions
  merged into one) are removed as well. Without tail_partition_by the tail is global
  (for daily aggregates: every day from the earliest day in the new rows).

  config: incremental_strategy='replace_tail', tail_partition_by='user_id',
          tail_order_by='event_ts'
#}
{% macro get_incremental_replace_tail_sql(arg_dict) %}
  {%- set target = arg_dict['target_relation'] -%}
  {%- set source = arg_dict['temp_relation'] -%}
  {%- set partition_by = config.get('tail_partition_by') -%}
  {%- set order_by = config.get('tail_order_by') -%}
  {%- if not order_by -%}
    {{ exceptions.raise_compiler_error("incremental_strategy 'replace_tail' needs config tail_order_by") }}
  {%- endif -%}
  {%- set dest_cols_csv = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}

  analyze {{ source }};

  {% if partition_by %}
  delete from {{ target }} as target
  using (
      select {{ partition_by }}, min({{ order_by }}) as tail_start
      from {{ source }}
      group by {{ partition_by }}
  ) as tails
  where target.{{ partition_by }} = tails.{{ partition_by }}
      and target.{{ order_by }} >= tails.tail_start;
  {% else %}
  delete from {{ target }} as target
  where target.{{ order_by }} >= (select min({{ order_by }}) from {{ source }});
  {% endif %}

  insert into {{ target }} ({{ dest_cols_csv }})
  select {{ dest_cols_csv }}
  from {{ source }}
{% endmacro %}

{#
  Incremental strategy 'delete_insert_analyzed': dbt's delete+insert by unique_key,
  after an ANALYZE of the new rows, so Postgres deletes the few matching target rows
  through the unique key's index instead of scanning the whole target (an unanalyzed
  temporary table looks big to the planner).
#}
{% macro get_incremental_delete_insert_analyzed_sql(arg_dict) %}
  analyze {{ arg_dict['temp_relation'] }};
  {{ get_delete_insert_merge_sql(arg_dict['target_relation'], arg_dict['temp_relation'], arg_dict['unique_key'],
                                 arg_dict['dest_columns'], arg_dict['incremental_predicates']) }}
{% endmacro %}
