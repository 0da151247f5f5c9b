-- Funnel conversion by root category: of the sessions that viewed an item of a root
-- category, how many added one (of that root) to the cart, and how many bought one.
-- A session counts once per root category it touched. Compile with
--   dbt compile --select funnel_conversion_by_root_category
-- and run the SQL in target/compiled/... (or paste it into a BI tool).

with

session_roots as (

    select
        session_id,
        root_category_id,
        bool_or(event_type = 'view') as has_view,
        bool_or(event_type = 'addtocart') as has_cart,
        bool_or(event_type = 'transaction') as has_purchase
    from {{ ref('fct_events') }}
    group by session_id, root_category_id

),

funnel as (

    select
        root_category_id,
        count(*) filter (where has_view) as viewing_sessions,
        count(*) filter (where has_view and has_cart) as carting_sessions,
        count(*) filter (where has_view and has_purchase) as purchasing_sessions
    from session_roots
    group by root_category_id

)

select
    funnel.root_category_id,
    categories.path as root_path,
    funnel.viewing_sessions,
    funnel.carting_sessions,
    funnel.purchasing_sessions,
    round(funnel.carting_sessions::numeric / nullif(funnel.viewing_sessions, 0), 4) as view_to_cart_rate,
    round(funnel.purchasing_sessions::numeric / nullif(funnel.carting_sessions, 0), 4) as cart_to_purchase_rate,
    round(funnel.purchasing_sessions::numeric / nullif(funnel.viewing_sessions, 0), 4) as view_to_purchase_rate
from funnel
left join {{ ref('dim_categories') }} as categories
    on funnel.root_category_id = categories.category_id
order by funnel.viewing_sessions desc, funnel.root_category_id
