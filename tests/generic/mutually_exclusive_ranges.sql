{#
  Validity intervals [lower, upper) within each partition must be well formed
  (lower < upper), must not overlap and must leave no gap: each interval starts where
  the previous one ends. Fails every offending interval.
#}
{% test mutually_exclusive_ranges(model, lower_bound_column, upper_bound_column, partition_by) %}

with

ordered as (

    select
        {{ partition_by }} as partition_key,
        {{ lower_bound_column }} as lower_bound,
        {{ upper_bound_column }} as upper_bound,
        lag({{ upper_bound_column }}) over (
            partition by {{ partition_by }} order by {{ lower_bound_column }}
        ) as previous_upper_bound
    from {{ model }}

)

select *
from ordered
where not (lower_bound < upper_bound)
    or (previous_upper_bound is not null and previous_upper_bound <> lower_bound)

{% endtest %}
