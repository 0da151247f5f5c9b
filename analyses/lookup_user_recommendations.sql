-- The one-query lookup an app or a BI tool runs for one visitor: their own list from
-- rec_user_recommendations, or, for a visitor without one (unknown or cold), the global
-- default list from rec_default_recommendations, flagged is_default. The same query as
-- python/aisle/pipeline.py (LOOKUP_SQL, used by `aisle recommend`); a test keeps the two
-- in step. Bind %(user_id)s and %(n)s (psycopg named parameters; `dbt compile` leaves
-- them as they are, and resolves the schemas, including a backtest's with --vars as_of).
-- The first branch is a few index probes: the visitor's profile (user_id), their category's
-- list (category_id, list_rank) and their recent-intent items (user_id, item_id) for the ~90%
-- on the fast route (a view), or the general table's unique index on (user_id, item_id) for
-- the rest. The second reads the default list through its (root_category_id, rank) index and
-- only runs when the first finds nothing. For a context (a root category the visitor is browsing), replace
-- `root_category_id is null` by `root_category_id = <root>`.
with own as (
    select rank, item_id, score, source, reason
    from {{ ref('rec_user_recommendations') }}
    where user_id = %(user_id)s
),
fallback as (
    select rank, item_id, score, source, reason
    from {{ ref('rec_default_recommendations') }}
    where root_category_id is null
      and not exists (select 1 from own)
)
select rank, item_id, score, source, reason, false as is_default from own
union all
select rank, item_id, score, source, reason, true as is_default from fallback
order by rank
limit %(n)s
