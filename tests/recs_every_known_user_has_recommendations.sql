{#
  Every known visitor (at least known_user_min_events events before as_of, from
  dim_users) has a list in rec_user_recommendations, and every list belongs to a known
  visitor. A list is read through its rank-1 row (recs_ranked_lists proves that each list
  has exactly one), so this is one filtered scan of the mart and one hash join.
#}
{%- set min_events = var('known_user_min_events') | int %}

with

known_users as (

    select user_id
    from {{ ref('dim_users') }}
    where n_events >= {{ min_events }}

),

listed_users as (

    select user_id
    from {{ ref('rec_user_recommendations') }}
    where rank = 1

)

select
    coalesce(known_users.user_id, listed_users.user_id) as user_id,
    case
        when listed_users.user_id is null then 'known visitor without a list'
        else 'list of a visitor who is not known'
    end as problem
from known_users
full outer join listed_users
    on known_users.user_id = listed_users.user_id
where known_users.user_id is null
    or listed_users.user_id is null
