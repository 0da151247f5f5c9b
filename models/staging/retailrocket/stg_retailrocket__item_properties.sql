{#-
  Item property snapshots, typed: only the two properties in the clear. A categoryid row
  gives category_id, an available row gives is_available; only snapshots before as_of,
  only finished load batches. The loader keeps only these two properties and checks
  their values; a value that still does not parse (a category id that is not a
  non-negative integer, an availability other than 0/1) stays visible as a null and
  fails a test rather than disappearing.
-#}
with

batches as (

    select batch_id
    from {{ source('retailrocket', 'load_batches') }}
    where file_kind = 'item_properties'
        and status = 'finished'

),

source as (

    select
        properties.batch_id,
        properties.line_no,
        properties."timestamp",
        properties.itemid,
        properties.property,
        properties.value
    from {{ source('retailrocket', 'item_properties') }} as properties
    inner join batches
        on properties.batch_id = batches.batch_id

),

typed as (

    select
        itemid as item_id,
        property,
        {{ aisle_epoch_ms_to_timestamptz('"timestamp"') }} as snapshot_ts,
        case
            when property = 'categoryid' and value ~ '^[0-9]{1,18}$' then value::bigint
        end as category_id,
        case
            when property = 'available' and value = '1' then true
            when property = 'available' and value = '0' then false
        end as is_available,
        batch_id,
        line_no
    from source

),

final as (

    select *
    from typed
    where {{ aisle_before_as_of('snapshot_ts') }}

)

select * from final
