{#-
  Numeric value of a MIMIC event: VALUENUM when present, else VALUE as a plain number, else a
  censored lab result ('<5', '>=10', 'LESS THAN 0.4', 'GREATER THAN 500') as its bound.
  CASE evaluates the regex only for rows where both casts failed (rare; keeps big scans cheap).
-#}
{% macro parse_number(valuenum, value) -%}
  case
    when try_cast({{ valuenum }} as double) is not null then try_cast({{ valuenum }} as double)
    when try_cast(trim({{ value }}) as double) is not null then try_cast(trim({{ value }}) as double)
    else try_cast(nullif(regexp_extract(
      upper(trim({{ value }})),
      '^(?:<=|>=|<|>|LESS THAN|GREATER THAN)\s*(-?[0-9]+(?:\.[0-9]+)?)$',
      1
    ), '') as double)
  end
{%- endmacro %}
