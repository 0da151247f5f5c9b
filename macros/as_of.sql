{#
  Time travel. With the var as_of set, every model that aggregates events reads only
  events strictly before it (and only property snapshots before it); decays are
  anchored at it. Unset (production), all data is used and decays are anchored at
  the latest event, never at now(), so a rebuild on the same data gives the same rows.
#}

{# The cutoff as a SQL timestamptz expression, or none in production. A cutoff
   without an explicit offset is UTC, whatever the session's TimeZone is. #}
{% macro aisle_as_of() -%}
  {%- set as_of = var('as_of', none) -%}
  {%- if as_of is none or as_of == '' -%}{{ return(none) }}{%- endif -%}
  {%- set text = (as_of | string) | trim -%}
  {%- if not modules.re.fullmatch('[0-9T :.+Z-]+', text) -%}
    {{ exceptions.raise_compiler_error("var as_of must be an ISO date or timestamp, got: " ~ text) }}
  {%- endif -%}
  {%- if modules.re.search('[0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)$', text) -%}
    {{ return("'" ~ text ~ "'::timestamptz") }}
  {%- else -%}
    {{ return("('" ~ text ~ "'::timestamp at time zone 'UTC')") }}
  {%- endif -%}
{%- endmacro %}

{# A predicate keeping rows strictly before as_of (always true in production). #}
{% macro aisle_before_as_of(column) -%}
  {%- if aisle_as_of() is none -%}true{%- else -%}{{ column }} < {{ aisle_as_of() }}{%- endif -%}
{%- endmacro %}

{# The decay anchor: as_of, or the latest event the build can see. #}
{% macro aisle_anchor_ts(events_relation, column='event_ts') -%}
  {%- if aisle_as_of() is none -%}(select max({{ column }}) from {{ events_relation }}){%- else -%}{{ aisle_as_of() }}{%- endif -%}
{%- endmacro %}
