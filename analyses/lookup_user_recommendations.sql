-- The one-query lookup an app or a BI tool runs for one visitor: their own list from
-- rec_user_recommendations; for a visitor without one (unknown, or cold: fewer events than
-- known_user_min_events), the default list of the root category they are browsing when the
-- app passes one, else the global default list, from rec_default_recommendations. Default
-- rows are flagged is_default, and context_root_category_id says which root's list they come
-- from (null: the global list). `aisle recommend` runs this file (python/aisle/pipeline.py,
-- lookup_sql: the refs become the recs schema); a test checks that dbt compiles it to the
-- same query. Bind %(user_id)s, %(n)s and %(root_category_id)s (null for no context; psycopg
-- named parameters; `dbt compile` leaves them as they are, and resolves the schemas,
-- including a backtest's with --vars as_of).
-- The first branch is a few index probes: the visitor's profile (user_id), their category's
-- list (category_id, list_rank) and their recent-intent items (user_id, item_id) for the ~90%
-- on the fast route (a view), or the general table's unique index on (user_id, item_id) for
-- the rest. The other two read the default lists (a few hundred rows) through their
-- (root_category_id, rank) index, and only run when the branch before finds nothing.
with own as (
    select rank, item_id, score, source, reason
    from {{ ref('rec_user_recommendations') }}
    where user_id = %(user_id)s
),
in_context as (
    select rank, item_id, score, source, reason
    from {{ ref('rec_default_recommendations') }}
    where root_category_id = %(root_category_id)s
      and not exists (select 1 from own)
),
fallback as (
    select rank, item_id, score, source, reason
    from {{ ref('rec_default_recommendations') }}
    where root_category_id is null
      and not exists (select 1 from own)
      and not exists (select 1 from in_context)
)
select rank, item_id, score, source, reason, false as is_default, null::bigint as context_root_category_id
from own
union all
select rank, item_id, score, source, reason, true, %(root_category_id)s::bigint
from in_context
union all
select rank, item_id, score, source, reason, true, null::bigint
from fallback
order by rank
limit %(n)s
