{#
  Dialect-specific building blocks of the core warehouse, behind adapter.dispatch so
  the project can later target another engine (a default__ version is portable SQL).
#}

{# A 64-bit hash (bigint) of a few bigint and text expressions: stable across reloads,
   runs and Postgres versions (hashint8extended/hashtextextended are the functions hash
   partitioning relies on, so their values never change across versions). Chained
   through the seed, so the order of the parts matters; a null part hashes as the
   smallest bigint (or the empty string for text). Integer parts are hashed as
   integers: no text conversion, three times cheaper than hashing a concatenation. #}
{% macro aisle_hash64(bigints=[], texts=[]) -%}
  {{ return(adapter.dispatch('aisle_hash64')(bigints, texts)) }}
{%- endmacro %}

{% macro postgres__aisle_hash64(bigints, texts) -%}
  {%- set ns = namespace(expr='0') -%}
  {%- for t in texts | reverse -%}
    {%- set ns.expr = "hashtextextended(coalesce(" ~ t ~ ", ''), " ~ ns.expr ~ ")" -%}
  {%- endfor -%}
  {%- for b in bigints | reverse -%}
    {%- set ns.expr = "hashint8extended(coalesce(" ~ b ~ ", -9223372036854775808), " ~ ns.expr ~ ")" -%}
  {%- endfor -%}
  {{ ns.expr }}
{%- endmacro %}

{% macro default__aisle_hash64(bigints, texts) -%}
  {%- set parts = [] -%}
  {%- for b in bigints %}{% do parts.append("coalesce(cast(" ~ b ~ " as varchar), '')") %}{% endfor -%}
  {%- for t in texts %}{% do parts.append("coalesce(" ~ t ~ ", '')") %}{% endfor -%}
  cast(conv(substr(md5(concat_ws('|', {{ parts | join(', ') }})), 1, 15), 16, 10) as bigint)
{%- endmacro %}

{# Epoch milliseconds (bigint) to timestamptz, exactly (integer arithmetic, no float). #}
{% macro aisle_epoch_ms_to_timestamptz(column) -%}
  {{ return(adapter.dispatch('aisle_epoch_ms_to_timestamptz')(column)) }}
{%- endmacro %}

{% macro postgres__aisle_epoch_ms_to_timestamptz(column) -%}
  (timestamptz '1970-01-01 00:00:00+00' + {{ column }} * interval '1 millisecond')
{%- endmacro %}

{% macro default__aisle_epoch_ms_to_timestamptz(column) -%}
  timestamp_millis({{ column }})
{%- endmacro %}

{# timestamptz to epoch milliseconds (bigint). #}
{% macro aisle_timestamptz_to_epoch_ms(column) -%}
  {{ return(adapter.dispatch('aisle_timestamptz_to_epoch_ms')(column)) }}
{%- endmacro %}

{% macro postgres__aisle_timestamptz_to_epoch_ms(column) -%}
  (date_part('epoch', {{ column }}) * 1000)::bigint
{%- endmacro %}

{% macro default__aisle_timestamptz_to_epoch_ms(column) -%}
  unix_millis({{ column }})
{%- endmacro %}

{# The session gap as an interval, from the var session_gap_minutes (validated). #}
{% macro aisle_session_gap() -%}
  {%- set minutes = var('session_gap_minutes', 30) -%}
  {%- if minutes is none or (minutes | string) | trim == '' or (minutes | float) <= 0 -%}
    {{ exceptions.raise_compiler_error("var session_gap_minutes must be a positive number of minutes, got: " ~ minutes) }}
  {%- endif -%}
  ({{ minutes | float }} * interval '1 minute')
{%- endmacro %}

{#
  Validity intervals of one item property from its snapshots (used by
  int_item_category_history and int_item_availability_history).

  A snapshot at time t says "from t on, the value is v". Consecutive snapshots with the
  same value are collapsed into one interval; the interval ends where the next change
  starts (valid_to is exclusive). The first interval of an item starts at '-infinity'
  (before the first snapshot the earliest known value applies) and the last one ends
  at 'infinity'. When two snapshots of one item share a timestamp, the one loaded last
  (batch_id, line_no) wins. last_batch_id is the latest load batch holding a snapshot
  of the item (lineage, and the incremental watermark). `snapshots` is a relation with
  item_id, snapshot_ts, batch_id, line_no and the value column.
#}
{% macro aisle_property_history(snapshots, value_column) -%}
one_per_timestamp as (

    select distinct on (item_id, snapshot_ts)
        item_id,
        snapshot_ts,
        {{ value_column }},
        batch_id
    from {{ snapshots }}
    order by item_id, snapshot_ts, batch_id desc, line_no desc

),

changes as (

    select
        item_id,
        snapshot_ts,
        {{ value_column }},
        lag({{ value_column }}) over item_order as previous_value,
        row_number() over item_order as snapshot_no,
        max(batch_id) over item_order as last_batch_id
    from one_per_timestamp
    -- One window for all three: lag and row_number ignore the frame, and the whole
    -- partition as the frame gives max the item's latest batch (a second window, over the
    -- partition alone, cost another pass over the snapshots: ~0.8 s of 1.6M at full scale).
    window item_order as (
        partition by item_id order by snapshot_ts
        rows between unbounded preceding and unbounded following
    )

),

change_points as (

    select
        item_id,
        snapshot_ts,
        {{ value_column }},
        snapshot_no = 1 as is_first,
        last_batch_id
    from changes
    where snapshot_no = 1
        or {{ value_column }} is distinct from previous_value

),

intervals as (

    select
        item_id,
        {{ value_column }},
        snapshot_ts as changed_at,
        case when is_first then '-infinity'::timestamptz else snapshot_ts end as valid_from,
        coalesce(
            lead(snapshot_ts) over (partition by item_id order by snapshot_ts),
            'infinity'::timestamptz
        ) as valid_to,
        last_batch_id
    from change_points

)
{%- endmacro %}

{#
  Whether an incremental run of a property history must rebuild it: true when a
  finished item_properties batch is newer than every batch the table has seen (a new
  file, or a file reloaded with --replace, which gets a new batch). Otherwise the
  snapshots are unchanged and the run is a no-op. (A batch whose snapshots all lie
  after as_of keeps a backtest's history rebuilding each run: correct, only slower.)
#}
{% macro aisle_property_history_is_stale() -%}
  {%- set batches = source('retailrocket', 'load_batches') -%}
  {%- if not execute or not is_incremental() -%}{{ return(true) }}{%- endif -%}
  {%- set query -%}
    select coalesce((select max(batch_id) from {{ batches }}
                     where file_kind = 'item_properties' and status = 'finished'), 0)
         > coalesce((select max(last_batch_id) from {{ this }}), 0)
  {%- endset -%}
  {{ return(run_query(query).columns[0].values()[0]) }}
{%- endmacro %}

{#
  The category watermark of a build: the latest load batch behind the item category
  history and the category tree it used. int_events_sessionized stores it with every
  row and refuses an incremental run once either has moved on (new snapshots or a new
  tree change the categories of events already built): rebuild with --full-refresh.
#}
{% macro aisle_category_watermark() -%}
  greatest(
    (select coalesce(max(last_batch_id), 0) from {{ ref('int_item_category_history') }}),
    (select coalesce(max(batch_id), 0) from {{ source('retailrocket', 'load_batches') }}
     where file_kind = 'category_tree' and status = 'finished')
  )
{%- endmacro %}

{# Fails an incremental run of an event model whose stored categories are out of date:
   the category history or the category tree changed since the table was built.
   `model_name`: check that model's table instead of this one (dim_items, which builds
   from the staged events in parallel with int_events_sessionized and so is not
   downstream of its check, runs the same check on int_events_sessionized's watermark;
   looked up in the graph, not with ref(), so that no dependency is added). #}
{% macro aisle_require_current_categories(column, model_name=none) -%}
  {%- if execute and is_incremental() -%}
    {%- set relation = this -%}
    {%- if model_name is not none -%}
      {%- set relation = none -%}
      {%- for node in graph.nodes.values() -%}
        {%- if node.resource_type == 'model' and node.package_name == project_name and node.name == model_name -%}
          {%- set relation = adapter.get_relation(database=node.database, schema=node.schema, identifier=node.alias) -%}
        {%- endif -%}
      {%- endfor -%}
    {%- endif -%}
    {%- if relation is not none -%}
    {%- set query -%}
      -- Every row of a build holds the same watermark (a run with another one stops
      -- here), so one row tells.
      select coalesce((select {{ column }} from {{ relation }} limit 1) = {{ aisle_category_watermark() }}, true)
    {%- endset -%}
    {%- if not run_query(query).columns[0].values()[0] -%}
      {{ exceptions.raise_compiler_error(
          "new item-property snapshots or a new category tree were loaded since " ~ relation ~
          " was built, so the categories of events already built may change: rebuild with " ~
          "`dbt build --full-refresh` (or `aisle run --full-refresh`)") }}
    {%- endif -%}
    {%- endif -%}
  {%- endif -%}
{%- endmacro %}

{# The post-hook of every table the project builds (dbt_project.yml: models and seeds):
   ANALYZE a table that has no statistics yet (a fresh build), so the next models plan
   with real statistics instead of waiting for autovacuum; incremental runs change a few
   rows and skip it. Views (nothing to analyze) get no statement. Measured at full scale:
   the serving build right after a fresh warehouse build took 38.6-41.7 s while the popularity,
   trending, affinity and event-total tables had no statistics, and 31.9 s with them (their
   ANALYZE takes ~0.5 s in all).
   It runs after the model's commit (dbt_project.yml: transaction: false). Inside the
   transaction, the ANALYZE came before the build's inserts reached the statistics
   collector (they are counted at commit), so every fresh table still showed all its rows as
   changed since its ANALYZE and autovacuum analyzed it a second time a minute later, in the
   middle of the next models: ~2.5 s of CPU per full build at full scale. #}
{% macro aisle_analyze_if_new() -%}
  {%- if config.get('materialized') not in ('view', 'ephemeral') -%}
  do $aisle$
  begin
    if not exists (select 1 from pg_catalog.pg_statistic where starelid = '{{ this }}'::regclass) then
      execute 'analyze {{ this }}';
    end if;
  end
  $aisle$
  {%- endif -%}
{%- endmacro %}

{#
  A pre-hook for the full build of a model that sorts or aggregates millions of rows,
  for that build's transaction only (incremental runs read a few rows and keep the
  server's settings):
  - work_mem 1GB: the 2.7M-event sorts need ~300 MB in memory; with less they spill to
    disk (external merge) and take about twice as long. Two models build at once, so
    the peak stays within a few GB on the 24 GB machine.
  - prefer_sort: no hash aggregate. When the input is stored in (or near) the grouping
    order, a sort and a streaming GroupAggregate cost half of a hash aggregate with
    millions of groups (measured at full scale).
  - sequential_scans: no index scans, which the planner otherwise picks to get that
    order, reading every row through the index.
#}
{% macro aisle_full_build_settings(prefer_sort=false, sequential_scans=false) -%}
  {%- if execute and not is_incremental() -%}
  set local work_mem = '1GB'
  {%- if prefer_sort %}; set local enable_hashagg = off{% endif -%}
  {%- if sequential_scans %}; set local enable_indexscan = off; set local enable_bitmapscan = off{% endif -%}
  {%- endif -%}
{%- endmacro %}

{#
  The full build of an incremental model with an enforced contract. dbt-postgres runs
  CREATE TABLE (the contract's columns and constraints) then INSERT ... SELECT, and an
  INSERT writes row by row, without CREATE TABLE AS's bulk-insert path, and is never
  planned in parallel. Here, for incremental models whose contract has only not_null
  constraints (every one in this project), the table is built with CREATE TABLE AS
  instead: the contract is checked exactly as dbt does (names and types, before anything
  is written), every column is cast to its contract type in the contract's order (the
  same types and values as the INSERT's assignment casts), and the not_null constraints
  are added in one ALTER TABLE (one scan). Measured on fct_sessions at full scale
  (1.77M rows): 0.9 s instead of 1.3 s. Anything else (temporary relations, tables,
  other constraint types) is dbt's own macro, unchanged. (Table models use the
  aisle_bulk_table materialization for the same reason.)
#}
{% macro postgres__create_table_as(temporary, relation, sql) -%}
  {%- set contract_config = config.get('contract') -%}
  {%- set not_null_columns = none -%}
  {%- if not temporary and contract_config.enforced and config.get('materialized') == 'incremental' -%}
    {%- set not_null_columns = aisle_contract_not_null_columns_or_none() -%}
  {%- endif -%}
  {%- if not_null_columns is not none -%}
    {%- set unlogged = config.get('unlogged', default=false) -%}
    {%- set sql_header = config.get('sql_header', none) -%}
    {{ sql_header if sql_header is not none }}
    {{ get_assert_columns_equivalent(sql) }}
    create {% if unlogged %}unlogged {% endif %}table {{ relation }} as
    select
      {%- for column in model['columns'].values() %}
        {%- set name = adapter.quote(column['name']) if column.get('quote') else column['name'] %}
        {{ name }}::{{ column['data_type'] }} as {{ name }}{{ "," if not loop.last }}
      {%- endfor %}
    from (
      {{ sql }}
    ) as model_subq;
    {%- if not_null_columns %}
    alter table {{ relation }}
      {%- for name in not_null_columns %}
      alter column {{ name }} set not null{{ "," if not loop.last }}
      {%- endfor %};
    {%- endif %}
  {%- else -%}
    {{ aisle_dbt_postgres_create_table_as(temporary, relation, sql) }}
  {%- endif -%}
{%- endmacro %}

{# The not_null columns of the model's contract (quoted as dbt quotes them), or none when
   the contract has any other kind of constraint (then dbt's own DDL applies). #}
{% macro aisle_contract_not_null_columns_or_none() -%}
  {%- if model.get('constraints') -%}{{ return(none) }}{%- endif -%}
  {%- set columns = [] -%}
  {%- for column in model['columns'].values() -%}
    {%- for constraint in column.get('constraints', []) -%}
      {%- if constraint['type'] != 'not_null' -%}{{ return(none) }}{%- endif -%}
      {%- do columns.append(adapter.quote(column['name']) if column.get('quote') else column['name']) -%}
    {%- endfor -%}
  {%- endfor -%}
  {{ return(columns) }}
{%- endmacro %}

{# dbt-postgres 1.x's postgres__create_table_as, verbatim: the fallback of the override above. #}
{% macro aisle_dbt_postgres_create_table_as(temporary, relation, sql) -%}
  {%- set unlogged = config.get('unlogged', default=false) -%}
  {%- set sql_header = config.get('sql_header', none) -%}

  {{ sql_header if sql_header is not none }}

  create {% if temporary -%}
    temporary
  {%- elif unlogged -%}
    unlogged
  {%- endif %} table {{ relation }}
  {% set contract_config = config.get('contract') %}
  {% if contract_config.enforced %}
    {{ get_assert_columns_equivalent(sql) }}
  {% endif -%}
  {% if contract_config.enforced and (not temporary) -%}
      {{ get_table_columns_and_constraints() }} ;
    insert into {{ relation }} (
      {{ adapter.dispatch('get_column_names', 'dbt')() }}
    )
    {%- set sql = get_select_subquery(sql) %}
  {% else %}
    as
  {% endif %}
  (
    {{ sql }}
  );
{%- endmacro %}
