{# Fails when the model has no rows at all. #}
{% test not_empty(model) %}

select 'the model is empty' as problem
where not exists (select 1 from {{ model }})

{% endtest %}
