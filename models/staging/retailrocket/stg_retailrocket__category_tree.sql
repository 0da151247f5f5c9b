{#-
  The category tree, typed: one row per category with its parent; roots have a null
  parent. When the tree was loaded several times, only the latest finished batch counts.
  (The tree has no timestamps, so as_of does not apply to it.)
-#}
with

latest_batch as (

    select max(batch_id) as batch_id
    from {{ source('retailrocket', 'load_batches') }}
    where file_kind = 'category_tree'
        and status = 'finished'

),

source as (

    select
        tree.categoryid,
        tree.parentid,
        tree.batch_id,
        tree.line_no
    from {{ source('retailrocket', 'category_tree') }} as tree
    inner join latest_batch
        on tree.batch_id = latest_batch.batch_id

),

final as (

    select
        categoryid as category_id,
        parentid as parent_category_id,
        parentid is null as is_root,
        batch_id,
        line_no
    from source

)

select * from final
