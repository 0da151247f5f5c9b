{#
  Helpers of the serving models (models/marts/recommendations/serving): validated vars and
  the category-CF list of every known visitor, shared by rec_user_recommendations (the
  hybrid) and rec_user_cf_candidates (category CF alone, for the evaluation).
#}

{# A var that must be a positive integer (top_n, candidates_per_category, ...). #}
{% macro aisle_positive_int_var(var_name) -%}
  {%- set value = var(var_name) -%}
  {%- set text = (value | string) | trim -%}
  {%- if value is none or not modules.re.fullmatch('[0-9]+', text) or (text | int) < 1 -%}
    {{ exceptions.raise_compiler_error("var " ~ var_name ~ " must be a positive integer, got: " ~ value) }}
  {%- endif -%}
  {{ return(text | int) }}
{%- endmacro %}

{# A boolean var; accepts true/false and the strings 'true'/'false'/'1'/'0' (--vars from a shell). #}
{% macro aisle_bool_var(var_name) -%}
  {%- set value = var(var_name) -%}
  {%- if value is sameas true or value is sameas false -%}{{ return(value) }}{%- endif -%}
  {%- set text = (value | string) | trim | lower -%}
  {%- if text in ('true', '1', 'yes') -%}{{ return(true) }}{%- endif -%}
  {%- if text in ('false', '0', 'no') -%}{{ return(false) }}{%- endif -%}
  {{ exceptions.raise_compiler_error("var " ~ var_name ~ " must be true or false, got: " ~ value) }}
{%- endmacro %}

{# The serving settings, validated once: a dict the models read.
   recent_intent: the recent-intent candidates are on (they need recommend_viewed_items:
     they are viewed items, so with recommend_viewed_items false they are off).
   exclude_interacted: every item the visitor viewed, carted or bought is kept out of the
     category-CF part (with recent intent on, the ones worth showing again are already
     in the list as recent-intent rows; with recommend_viewed_items false, none may be shown).
   Otherwise only purchased items are excluded. #}
{% macro aisle_serving_settings() -%}
  {%- set recommend_viewed = aisle_bool_var('recommend_viewed_items') -%}
  {%- set recent_intent = recommend_viewed and aisle_bool_var('recent_intent_candidates') -%}
  {%- set min_events = var('known_user_min_events') -%}
  {%- if min_events is none or not modules.re.fullmatch('[0-9]+', (min_events | string) | trim) -%}
    {{ exceptions.raise_compiler_error("var known_user_min_events must be a non-negative integer, got: " ~ min_events) }}
  {%- endif -%}
  {{ return({
      'top_n': aisle_positive_int_var('top_n'),
      'min_events': (min_events | string | trim | int),
      'recommend_viewed': recommend_viewed,
      'recent_intent': recent_intent,
      'exclude_interacted': recent_intent or not recommend_viewed,
  }) }}
{%- endmacro %}

{# Whether the pure category-CF list (rec_user_cf_candidates) excludes every touched item
   (recommend_viewed_items false) or only the purchased ones. #}
{% macro aisle_serving_exclude_interacted(s, pure=false) -%}
  {{ return((not s.recommend_viewed) if pure else s.exclude_interacted) }}
{%- endmacro %}

{# SQL over a row of rec_user_profiles (or of the same columns) named `alias`: the visitor's
   recent-intent row count, excluded-item count and the list positions to skip (bit mask). #}
{% macro aisle_serving_n_intent(s, alias='profiles') -%}
  {%- if s.recent_intent -%}least({{ alias }}.n_intent_candidates, {{ s.top_n }}){%- else -%}0{%- endif -%}
{%- endmacro %}

{% macro aisle_serving_n_excluded(s, alias='profiles', pure=false) -%}
  {%- if aisle_serving_exclude_interacted(s, pure) -%}{{ alias }}.n_touched{%- else -%}{{ alias }}.n_purchased{%- endif -%}
{%- endmacro %}

{% macro aisle_serving_skip_mask(s, alias='profiles', pure=false) -%}
  {%- if aisle_serving_exclude_interacted(s, pure) -%}{{ alias }}.touched_mask{%- else -%}{{ alias }}.purchased_mask{%- endif -%}
{%- endmacro %}

{#
  The (visitor, item) pairs of rec_user_item_interactions, as CTEs ending in pairs(user_id,
  item_id, n_views, n_carts, n_purchases, intent_score, last_event_ts, min_category_id,
  max_category_id, is_available, is_intent_candidate): one sorted aggregation of the events
  before as_of. Shared by
  rec_user_item_interactions and rec_user_profiles. Profiles aggregate the same pairs per
  visitor, and computing the pairs twice lets dbt build both models at the same time instead
  of one after the other (measured at full scale: 11 s for both instead of 16 s in a row).
  With var evaluation_users set (`aisle evaluate`), only those visitors' events are read
  (aisle_evaluation_users). The caller sets a sorted-grouping plan (enable_hashagg off) and
  1 GB of work_mem for its transaction.
#}
{% macro aisle_user_item_pair_ctes() -%}
{%- set half_life_days = aisle_half_life_days('affinity_half_life_days') %}
{%- set users = aisle_evaluation_users() %}
-- The latest event before as_of, read off dim_items' per-item last events (420K rows): the
-- same timestamp as max(event_ts) over the 2.7M events, which cost a full scan (~0.6 s) in
-- each of the two models that read these CTEs.
anchor as (

    select {{ aisle_anchor_ts(ref('dim_items'), column='last_event_ts') }} as anchor_ts

),

weights as (

    {{ aisle_event_weights_row(ref('event_weights')) }}

),

items as (

    select
        item_id,
        is_available
    from {{ ref('dim_items') }}

),

events as (

    select
        events.user_id,
        events.item_id,
        events.event_type,
        events.category_id,
        events.event_ts,
        items.is_available,
        case when events.event_type <> 'transaction' then {{ aisle_event_weight('events.event_type') }} * {{
            aisle_decay_factor('events.event_ts', 'anchor.anchor_ts', half_life_days) }} else 0 end as intent_term
    from {{ ref('fct_events') }} as events
    cross join anchor
    -- one row: each event's weight without a join (a join to the seed made the planner sort
    -- the events by type to merge-join them)
    cross join weights
    -- joined per event, before the grouping, so that the groups come out in (user_id, item_id)
    -- order straight into the window (a join after it would lose that order)
    left join items
        on events.item_id = items.item_id
    where {{ aisle_before_as_of('events.event_ts') }}
    {%- if users is not none %}
        and events.user_id in (select user_id from {{ users }})
    {%- endif %}

),

per_pair as (

    select
        user_id,
        item_id,
        count(*) filter (where event_type = 'view') as n_views,
        count(*) filter (where event_type = 'addtocart') as n_carts,
        count(*) filter (where event_type = 'transaction') as n_purchases,
        {{ aisle_exact_sum('intent_term') }} as intent_score,
        max(event_ts) as last_event_ts,
        min(category_id) filter (where category_id <> -1) as min_category_id,
        max(category_id) filter (where category_id <> -1) as max_category_id,
        -- the item's availability: the same on each of the pair's events
        bool_or(is_available) as is_available
    from events
    group by user_id, item_id

),

pairs as (

    select
        per_pair.*,
        -- may be shown again as recent intent: not purchased, not known to be unavailable
        per_pair.n_purchases = 0 and per_pair.is_available is not false as is_intent_candidate
    from per_pair

)
{%- endmacro %}

{# Var evaluation_users, validated: none (every known visitor), or the `schema.table` (lower
   case, unquoted) of the evaluation's test users, with a user_id column. `aisle evaluate`
   sets it for its backtest build: rec_user_item_interactions then keeps only those visitors'
   events, so rec_user_profiles, rec_user_recommendations and rec_user_cf_candidates hold
   only the known visitors among them, with the same rows as an unrestricted build (every
   serving row of a visitor is computed from that visitor's own interactions and the shared
   category lists). The tests of "every known visitor has a list" then check every known
   visitor among those users. #}
{% macro aisle_evaluation_users() -%}
  {%- set users = var('evaluation_users', none) -%}
  {%- if users is none or (users | string | trim) in ('', 'none', 'null') -%}{{ return(none) }}{%- endif -%}
  {%- set users = users | string | trim -%}
  {%- if not modules.re.fullmatch('[a-z_][a-z0-9_]*[.][a-z_][a-z0-9_]*', users) -%}
    {{ exceptions.raise_compiler_error("var evaluation_users must be a lower-case schema.table name, got: " ~ users) }}
  {%- endif -%}
  {{ return(users) }}
{%- endmacro %}

{#
  The category-CF rows of every known visitor, as CTEs (the caller writes `with` before
  them). `s` comes from aisle_serving_settings(); pure=true gives category CF alone (no
  recent-intent rows before it; its own exclusions). The CTEs the callers read:
    affinity(user_id, category_id, affinity_score)  the categories known visitors browsed
    general_users(user_id, n_intent, n_excluded)     the visitors off the fast path
    general_rows(user_id, item_id, score, reason, cf_rank, n_intent)
    cf_counts(user_id, n_cf): general-path visitors with n_intent + n_cf < top_n need top-ups
    cf_rows(user_id, item_id, score, reason, rank): rank = the row's place in the list
        (after the n_intent recent-intent rows), at most top_n.

  Definition (python/tests/test_recommendations.py computes the same by brute force).
  For visitor u with recent-intent rows k (0 when pure or off) and excluded items X
  (aisle_serving_exclude_interacted: every touched item, or only the purchased ones):
    - each category c that u browsed contributes E(c): the first top_n - k entries of its
      list (rec_category_candidates, by list_rank) whose item is not in X (fewer when the
      list runs out);
    - score(item) = sum over the c whose E(c) holds the item of
      affinity(u, c) x cf_weight(c, item) (for two or more categories each term is rounded
      to 2^-32 first, so the sum does not depend on the order of the rows);
    - the CF items are ranked by score desc, then item_id, and the first top_n - k are
      kept; reason: the browsed category with the largest term (ties: the lower id).

  How it is computed without sorting 14M rows: each list is an array (aisle_category_list_arrays). A
  (visitor, category) pair with skip mask m (bit p set = the entry at position p is
  excluded) unnests the first k' + popcount(m) entries (k' = top_n - k); the entry at
  position p is kept when bit p is clear and p - popcount(m & (2^p - 1)) <= k', which is
  also its rank in E(c).
  A visitor with a single browsed category (about 90%, rec_user_profiles.is_fast) needs
  nothing more: that rank, plus k, is their final rank. The others (general path) are
  summed per item and ranked with a window.
#}
{#
  One category's candidate list (rec_category_candidates) as two arrays in list order,
  item_ids and cf_weights, for a lateral join keyed by `category_id` (an expression of the
  outer row). A lookup of one visitor reads one list through the (category_id, list_rank)
  index, and a scan of many visitors computes each list once: the planner caches the ~1,200
  lists in a Memoize node. An outer row whose category has no list gets two null arrays.
#}
{% macro aisle_category_list_arrays(category_id) -%}
select
            array_agg(lists.item_id order by lists.list_rank) as item_ids,
            array_agg(lists.cf_weight order by lists.list_rank) as cf_weights
        from {{ ref('rec_category_candidates') }} as lists
        where lists.category_id = {{ category_id }}
{%- endmacro %}

{#
  The fast-path rows (CTE fast_rows: user_id, item_id, score, reason, browsed_category_id, rank)
  of the visitors with
  one browsed category whose list fills their list (rec_user_profiles.is_fast, or is_fast_pure
  with pure=true): the kept entries of that one list, by the skip-mask rule above. rank counts
  the n_intent recent-intent rows before them (0 when pure); the caller keeps rank <= top_n.
  The category's list is aggregated into arrays in a lateral subquery keyed by the profile's
  category: a lookup of one visitor reads one list through the (category_id, list_rank) index,
  and a scan of every visitor computes each list once (the planner caches the ~1,200 lists in
  a Memoize node). rec_user_recs_fast_path is a view over this, so it must stay cheap per
  visitor.
#}
{% macro aisle_fast_rows_cte(s, pure=false, users=none) -%}
{%- set only_users = '' if users is none else ' and profiles.user_id in (select user_id from ' ~ users ~ ')' -%}
{%- set sfx = '_pure' if pure else '' -%}
{%- set n_intent = '0' if pure else 'profiles.n_intent' -%}
fast_rows as not materialized (

    select
        user_id,
        item_ids[position] as item_id,
        affinity_score * cf_weights[position] as score,
        {{ aisle_reason_browsed('category_id') }} as reason,
        category_id as browsed_category_id,
        n_intent + position - case when skip_mask = 0 then 0 else
            bit_count((skip_mask & ((1::bigint << position) - 1))::bit(64)) end
            as rank
    from (
        select
            profiles.user_id,
            profiles.category_id,
            profiles.affinity_score,
            {{ n_intent }} as n_intent,
            profiles.skip_mask{{ sfx }} as skip_mask,
            list_arrays.item_ids,
            list_arrays.cf_weights,
            -- the first `bound` positions (never more than the list holds), read by subscript:
            -- cheaper than slicing and unnesting the two arrays. Reading the list's length here
            -- also makes the planner fetch each visitor's list once, not once per position. A
            -- set-returning function in the select list (ProjectSet) streams the positions: in
            -- FROM, each visitor's call filled and read a tuplestore (~2 s more over the 11M
            -- rows of a full read).
            generate_series(1, least(profiles.bound{{ sfx }}, cardinality(list_arrays.item_ids))) as position
        from {{ ref('rec_user_profiles') }} as profiles
        cross join lateral ({{ aisle_category_list_arrays('profiles.category_id') }}) as list_arrays
        where profiles.is_fast{{ sfx }}{{ only_users }}
    ) as positions
    where (skip_mask >> position) & 1 = 0

)
{%- endmacro %}

{#- users: optional `schema.table` with a user_id column (aisle_evaluation_users()); restricts
    the visitors computed (the evaluation passes its test users, so the pure-CF view costs
    nothing for the rest). -#}
{% macro aisle_user_cf_ctes(s, pure=false, users=none) -%}
{%- set only_users = '' if users is none else ' and profiles.user_id in (select user_id from ' ~ users ~ ')' -%}
{%- set top_n = s.top_n -%}
{%- set sfx = '_pure' if pure else '' -%}
{%- set n_intent = '0' if pure else 'profiles.n_intent' -%}
affinity as not materialized (

    select
        affinity.user_id,
        affinity.category_id,
        affinity.affinity_score
    from {{ ref('rec_user_category_affinity') }} as affinity
    {%- if s.min_events > 1 %}
    inner join {{ ref('rec_user_profiles') }} as profiles
        on affinity.user_id = profiles.user_id
    {%- endif %}

),

lists as not materialized (

    select
        category_id,
        list_rank,
        item_id,
        cf_weight
    from {{ ref('rec_category_candidates') }}

),

{{ aisle_fast_rows_cte(s, pure=pure, users=users) }},
-- General path: every other known visitor.
general_users as (

    select
        user_id,
        {{ n_intent }} as n_intent,
        n_excluded{{ sfx }} as n_excluded
    from {{ ref('rec_user_profiles') }} as profiles
    where not is_fast{{ sfx }}{{ only_users }}

),

-- Per (visitor, browsed category): the positions of the category's list holding an
-- excluded item. The visitor's rows are read through the indexes on user_id (lateral), not
-- by scanning the 2M interactions and 1.5M affinities for 10% of the visitors.
general_skips as (

    select
        general_users.user_id,
        lists.category_id,
        bit_or(1::bigint << lists.list_rank) as skip_mask
    from general_users
    cross join lateral (
        select interactions.item_id
        from {{ ref('rec_user_item_interactions') }} as interactions
        where interactions.user_id = general_users.user_id
        {%- if not aisle_serving_exclude_interacted(s, pure) %}
            and interactions.n_purchases > 0
        {%- endif %}
    ) as excluded
    inner join lists
        on excluded.item_id = lists.item_id
    group by general_users.user_id, lists.category_id

),

general_pairs as (

    select
        general_users.user_id,
        general_users.n_intent,
        browsed.category_id,
        browsed.affinity_score,
        coalesce(general_skips.skip_mask, 0) as skip_mask
    from general_users
    cross join lateral (
        select
            affinity.category_id,
            affinity.affinity_score
        from affinity
        where affinity.user_id = general_users.user_id
    ) as browsed
    left join general_skips
        on general_users.user_id = general_skips.user_id
        and browsed.category_id = general_skips.category_id

),

-- Each pair's list comes from the same lateral lookup as on the fast path (the planner
-- computes each of the ~1,200 lists once, in a Memoize node), and its kept entries from a
-- subquery of their own (offset 0 keeps it apart): the rows that reach the grouping then
-- carry the item and its contribution, not the two arrays (carrying the arrays through the
-- sorts cost several hundred MB of sort space at full scale).
general_entries as (

    select
        general_pairs.user_id,
        general_pairs.n_intent,
        entries.item_id,
        general_pairs.category_id as browsed_category_id,
        entries.contribution
    from general_pairs
    cross join lateral ({{ aisle_category_list_arrays('general_pairs.category_id') }}) as list_arrays
    cross join lateral (
        -- the positions read by subscript, as on the fast path (cheaper than unnesting two slices)
        select
            list_arrays.item_ids[positions.position] as item_id,
            general_pairs.affinity_score * list_arrays.cf_weights[positions.position] as contribution
        from generate_series(
            1,
            least({{ top_n }} - general_pairs.n_intent + bit_count(general_pairs.skip_mask::bit(64)),
                  -- a category without a list has null arrays (least() would skip a null)
                  coalesce(cardinality(list_arrays.item_ids), 0))::integer
        ) as positions (position)
        where (general_pairs.skip_mask >> positions.position) & 1 = 0
            and positions.position
                - bit_count((general_pairs.skip_mask & ((1::bigint << positions.position) - 1))::bit(64))
                <= {{ top_n }} - general_pairs.n_intent
        offset 0
    ) as entries

),

general_scores as (

    select
        user_id,
        n_intent,
        item_id,
        {{ aisle_exact_sum('contribution') }} as score,
        -(max(array[contribution, -browsed_category_id::double precision]))[2] as browsed_category_id
    from general_entries
    group by user_id, n_intent, item_id

),

general_rows as (

    select *
    from (
        select
            user_id,
            item_id,
            score,
            {{ aisle_reason_browsed('browsed_category_id::bigint') }} as reason,
            row_number() over (partition by user_id order by score desc, item_id) as cf_rank,
            -- the visitor's number of scored items (same partition: no second sort)
            count(*) over (partition by user_id) as n_scored,
            n_intent
        from general_scores
    ) as ranked
    where n_intent + cf_rank <= {{ top_n }}

),

-- A general-path visitor with fewer than top_n - n_intent rows needs top-ups. Read off each
-- visitor's first row (no grouping of the 1.3M rows).
cf_counts as (

    select
        user_id,
        least(n_scored, {{ top_n }} - n_intent) as n_cf
    from general_rows
    where cf_rank = 1

),

cf_rows as (

    select user_id, item_id, score, reason, rank from fast_rows
    where rank <= {{ top_n }}

    union all

    select user_id, item_id, score, reason, n_intent + cf_rank as rank from general_rows

)
{%- endmacro %}

{#
  aisle_bulk_table: dbt's table materialization for a big mart with an enforced contract.
  For a contracted model dbt-postgres runs CREATE TABLE (columns and constraints), then
  INSERT ... SELECT: PostgreSQL never plans an INSERT in parallel, and it writes row by row
  without the bulk-insert buffer of CREATE TABLE AS (measured on rec_user_recommendations,
  14M rows: about 2.5 s more, plus the lost parallelism). This materialization checks the
  contract exactly as dbt does (column names and types, before anything is written), builds
  the table with CREATE TABLE AS over the contract's columns in the contract's order
  (parallel query; with wal_level=minimal no WAL), then adds the columns' not_null
  constraints in one ALTER TABLE (one scan). Other constraint types are refused. Everything
  else is dbt's own table materialization: indexes after the data, atomic rename, hooks,
  grants, docs.
#}
{% macro aisle_not_null_columns() -%}
  {%- set columns = [] -%}
  {%- for column in model['columns'].values() -%}
    {%- for constraint in column.get('constraints', []) -%}
      {%- if constraint['type'] == 'not_null' -%}
        {%- do columns.append(column['name']) -%}
      {%- else -%}
        {{ exceptions.raise_compiler_error("materialized='aisle_bulk_table' supports only not_null constraints; column " ~ column['name'] ~ " has " ~ constraint['type']) }}
      {%- endif -%}
    {%- endfor -%}
  {%- endfor -%}
  {%- if model.get('constraints') -%}
    {{ exceptions.raise_compiler_error("materialized='aisle_bulk_table' does not support model-level constraints") }}
  {%- endif -%}
  {{ return(columns) }}
{%- endmacro %}

{% materialization aisle_bulk_table, adapter='postgres' %}

  {%- set existing_relation = load_cached_relation(this) -%}
  {%- set target_relation = this.incorporate(type='table') %}
  {%- set intermediate_relation = make_intermediate_relation(target_relation) -%}
  {%- set preexisting_intermediate_relation = load_cached_relation(intermediate_relation) -%}
  {%- set backup_relation_type = 'table' if existing_relation is none else existing_relation.type -%}
  {%- set backup_relation = make_backup_relation(target_relation, backup_relation_type) -%}
  {%- set preexisting_backup_relation = load_cached_relation(backup_relation) -%}
  {% set grant_config = config.get('grants') %}
  {%- set contract_config = config.get('contract') -%}
  {%- set not_null_columns = aisle_not_null_columns() -%}

  {{ drop_relation_if_exists(preexisting_intermediate_relation) }}
  {{ drop_relation_if_exists(preexisting_backup_relation) }}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}

  -- `BEGIN` happens here:
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {% call statement('main') -%}
    {%- set sql_header = config.get('sql_header', none) -%}
    {{ sql_header if sql_header is not none }}
    {%- if contract_config.enforced %}
      {{ get_assert_columns_equivalent(sql) }}
    {%- endif %}
    create table {{ intermediate_relation }} as (
      {%- if contract_config.enforced %}
      {{ get_select_subquery(sql) }}
      {%- else %}
      {{ sql }}
      {%- endif %}
    );
    {%- if contract_config.enforced and not_null_columns %}
    alter table {{ intermediate_relation }}
      {%- for column in not_null_columns %}
      alter column {{ adapter.quote(column) }} set not null{{ "," if not loop.last }}
      {%- endfor %};
    {%- endif %}
  {%- endcall %}

  {% do create_indexes(intermediate_relation) %}

  {% if existing_relation is not none %}
    {% set existing_relation = load_cached_relation(existing_relation) %}
    {% if existing_relation is not none %}
      {{ adapter.rename_relation(existing_relation, backup_relation) }}
    {% endif %}
  {% endif %}

  {{ adapter.rename_relation(intermediate_relation, target_relation) }}

  {{ run_hooks(post_hooks, inside_transaction=True) }}

  {% set should_revoke = should_revoke(existing_relation, full_refresh_mode=True) %}
  {% do apply_grants(target_relation, grant_config, should_revoke=should_revoke) %}

  {% do persist_docs(target_relation, model) %}

  -- `COMMIT` happens here
  {{ adapter.commit() }}

  {{ drop_relation_if_exists(backup_relation) }}

  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({'relations': [target_relation]}) }}

{% endmaterialization %}
