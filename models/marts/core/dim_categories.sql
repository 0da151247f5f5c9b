{#-
  The category tree, one row per category, with its parent, level (a root is 1), root
  and path from the root, plus the unknown bucket (category_id -1, 'unknown') that
  holds items without any category. n_items counts the items currently in the
  category (dim_items); n_events the events whose item was in it at event time
  (summed from agg_category_daily). Categories outside a sound tree (orphans, cycles, categories missing
  from the tree file) are kept with their tree_status and root -1.
-#}
{{
  config(
    contract={'enforced': true},
    indexes=[
      {'columns': ['category_id'], 'unique': true},
      {'columns': ['root_category_id']},
    ],
  )
}}

with

paths as (

    select
        category_id,
        parent_category_id,
        level,
        root_category_id,
        path,
        tree_status
    from {{ ref('int_category_paths') }}

    union all

    select
        -1 as category_id,
        null as parent_category_id,
        1 as level,
        -1 as root_category_id,
        'unknown' as path,
        'unknown' as tree_status

),

children as (

    select
        parent_category_id as category_id,
        count(*) as n_children
    from paths
    where parent_category_id is not null
    group by parent_category_id

),

item_counts as (

    select
        category_id,
        count(*) as n_items
    from {{ ref('dim_items') }}
    group by category_id

),

-- The daily aggregate already counts the events per category: 1000x fewer rows to read.
event_counts as (

    select
        category_id,
        sum(n_events) as n_events
    from {{ ref('agg_category_daily') }}
    group by category_id

),

final as (

    select
        paths.category_id::bigint as category_id,
        paths.parent_category_id::bigint as parent_category_id,
        case when paths.category_id = -1 then 'unknown' else paths.category_id::text end as category_name,
        paths.level::integer as level,
        paths.root_category_id::bigint as root_category_id,
        paths.path,
        paths.tree_status,
        coalesce(children.n_children, 0) = 0 as is_leaf,
        coalesce(children.n_children, 0)::integer as n_children,
        coalesce(item_counts.n_items, 0)::bigint as n_items,
        coalesce(event_counts.n_events, 0)::bigint as n_events
    from paths
    left join children
        on paths.category_id = children.category_id
    left join item_counts
        on paths.category_id = item_counts.category_id
    left join event_counts
        on paths.category_id = event_counts.category_id

)

select * from final
