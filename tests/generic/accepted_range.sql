{#
  Fails every row whose value lies outside [min_value, max_value] (or the open range
  when inclusive is false). Either bound may be omitted; nulls pass (test them with
  not_null).
#}
{% test accepted_range(model, column_name, min_value=none, max_value=none, inclusive=true) %}

select *
from {{ model }}
where false
{%- if min_value is not none %}
    or {{ column_name }} {{ '<' if inclusive else '<=' }} {{ min_value }}
{%- endif %}
{%- if max_value is not none %}
    or {{ column_name }} {{ '>' if inclusive else '>=' }} {{ max_value }}
{%- endif %}

{% endtest %}
