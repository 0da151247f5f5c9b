{#-
  Every category of the tree with its level (a root is level 1), its root and its path
  from the root ('root > ... > category'), by a recursive walk down from the roots.

  Categories the walk cannot reach are kept, not dropped, and classified by a walk up
  their parents: 'orphan' (the chain ends at a parent missing from the tree) or 'cycle'
  (the chain loops). They get root -1 (unknown) and a null level and path;
  tree_status = 'ok' is tested, so they are reported. Categories that items refer to but
  the tree does not contain are added with tree_status 'not_in_tree' (a warning).
-#}
{{ config(unlogged=true) }}

with recursive

tree as (

    select
        category_id,
        parent_category_id
    from {{ ref('stg_retailrocket__category_tree') }}

),

walk_down as (

    select
        category_id,
        parent_category_id,
        1 as level,
        category_id as root_category_id,
        category_id::text as path,
        array[category_id] as visited
    from tree
    where parent_category_id is null

    union all

    select
        child.category_id,
        child.parent_category_id,
        parent.level + 1 as level,
        parent.root_category_id,
        parent.path || ' > ' || child.category_id::text as path,
        parent.visited || child.category_id as visited
    from walk_down as parent
    inner join tree as child
        on child.parent_category_id = parent.category_id
    where not child.category_id = any(parent.visited)

),

reached as (

    select distinct on (category_id)
        category_id,
        parent_category_id,
        level,
        root_category_id,
        path
    from walk_down
    order by category_id, level, path

),

unreached as (

    select
        tree.category_id,
        tree.parent_category_id
    from tree
    left join reached
        on tree.category_id = reached.category_id
    where reached.category_id is null

),

-- Walk up from each unreached category until a missing parent (orphan) or a loop (cycle).
walk_up as (

    select
        unreached.category_id as start_id,
        unreached.parent_category_id as next_id,
        array[unreached.category_id] as visited,
        false as is_loop
    from unreached

    union all

    select
        walk_up.start_id,
        tree.parent_category_id as next_id,
        walk_up.visited || tree.category_id as visited,
        tree.parent_category_id = any(walk_up.visited || tree.category_id) as is_loop
    from walk_up
    inner join tree
        on tree.category_id = walk_up.next_id
    where not walk_up.is_loop

),

classified as (

    select
        start_id as category_id,
        case when bool_or(is_loop) then 'cycle' else 'orphan' end as tree_status
    from walk_up
    group by start_id

),

item_categories as (

    select distinct category_id
    from {{ ref('int_item_category_history') }}

),

final as (

    select
        category_id,
        parent_category_id,
        level,
        root_category_id,
        path,
        'ok' as tree_status
    from reached

    union all

    select
        unreached.category_id,
        unreached.parent_category_id,
        null::integer as level,
        -1::bigint as root_category_id,
        null::text as path,
        classified.tree_status
    from unreached
    inner join classified
        on unreached.category_id = classified.category_id

    union all

    select
        item_categories.category_id,
        null::bigint as parent_category_id,
        null::integer as level,
        -1::bigint as root_category_id,
        null::text as path,
        'not_in_tree' as tree_status
    from item_categories
    left join tree
        on item_categories.category_id = tree.category_id
    where tree.category_id is null

)

select * from final
