{#- Small generic tests written for this project (no dbt packages: the build runs offline). -#}

{#- Fails on rows whose column is outside [min_value, max_value] (either bound optional; NULLs pass). -#}
{% test value_between(model, column_name, min_value=none, max_value=none) %}
select {{ column_name }} as failing_value
from {{ model }}
where {{ column_name }} is not null
  and (
    false
    {%- if min_value is not none %} or {{ column_name }} < {{ min_value }}{% endif %}
    {%- if max_value is not none %} or {{ column_name }} > {{ max_value }}{% endif %}
  )
{% endtest %}

{#- Fails on duplicated combinations of the listed columns. -#}
{% test unique_combination(model, columns) %}
select {{ columns | join(', ') }}, count(*) as n_rows
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}

{#- Fails on rows where the SQL boolean expression is not true. -#}
{% test expression_is_true(model, expression) %}
select *
from {{ model }}
where not coalesce(({{ expression }}), false)
{% endtest %}

{#- Fails when the model's row count is outside [min_rows, max_rows]. -#}
{% test row_count_between(model, min_rows=none, max_rows=none) %}
select n_rows
from (select count(*) as n_rows from {{ model }})
where false
  {%- if min_rows is not none %} or n_rows < {{ min_rows }}{% endif %}
  {%- if max_rows is not none %} or n_rows > {{ max_rows }}{% endif %}
{% endtest %}

{#- measurements: every value lies in its variable's valid range of seed `variables`; categorical
    rows have a category text and continuous rows none. -#}
{% test values_within_variable_ranges(model) %}
select m.variable, m.value, m.value_text, v.valid_low, v.valid_high
from {{ model }} as m
inner join {{ ref('variables') }} as v on v.variable = m.variable
where m.value < v.valid_low
   or m.value > v.valid_high
   or (v.kind = 'categorical') <> (m.value_text is not null)
{% endtest %}

{#- measurements: hours lie within [-tolerance, los_hours + tolerance] of their visit. -#}
{% test hours_within_visit_window(model, tolerance_hours) %}
select m.icustay_id, m.hours, v.los_hours
from {{ model }} as m
inner join {{ ref('visits') }} as v on v.icustay_id = m.icustay_id
where m.hours < -({{ tolerance_hours }})
   or m.hours > v.los_hours + ({{ tolerance_hours }})
{% endtest %}
