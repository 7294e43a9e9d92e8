{#- Explicit casts used by staging. try_cast ignores surrounding spaces and turns '' or a malformed
    value into NULL (counted downstream) instead of failing the build. -#}
{% macro to_bigint(column) -%} try_cast({{ column }} as bigint) {%- endmacro %}
{% macro to_integer(column) -%} try_cast({{ column }} as integer) {%- endmacro %}
{% macro to_double(column) -%} try_cast({{ column }} as double) {%- endmacro %}
{% macro to_timestamp(column) -%} try_cast({{ column }} as timestamp) {%- endmacro %}
{% macro to_text(column) -%} nullif(trim({{ column }}), '') {%- endmacro %}
