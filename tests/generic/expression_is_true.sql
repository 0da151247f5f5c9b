{#
  Fails every row where the boolean SQL `expression` (over the model's columns) is not
  true; a null result counts as a failure.
    data_tests:
      - expression_is_true:
          arguments: {expression: "session_end >= session_start"}
#}
{% test expression_is_true(model, expression, column_name=none) %}

select *
from {{ model }}
where not coalesce({{ expression }}, false)

{% endtest %}
