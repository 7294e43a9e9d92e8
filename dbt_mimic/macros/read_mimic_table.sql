{#-
  The ONE place where a raw MIMIC-III file is read. Used by every staging model.

  * path: var('mimic_files')[table] (MimicFiles.dbt_vars()); without it `dbt parse` still works and
    any command that runs SQL stops with a message naming the table.
  * every column is read as VARCHAR (all_varchar): DuckDB's type sniffer would otherwise read ICD-9
    codes such as 0066 as integers and drop the leading zero; staging casts explicitly.
  * quote/escape are fixed to '"': the sniffer picks "no quote" on the demo's first rows and then
    fails on a later quoted field ("Arm, Right Lower"); the full release quotes every string.
  * column names: DuckDB binds identifiers case-insensitively, so selecting the lowercase names of
    var('mimic_columns') and aliasing them lowercase normalises demo (lower) and full-release
    (UPPER) headers alike, and reads only the needed columns.
  * the source() call registers the raw table as a dbt source (lineage; Dagster maps it to the
    raw-files asset); its relation is not queried.
-#}
{% macro read_mimic_table(table_name) -%}
  {%- set files = var('mimic_files', {}) or {} -%}
  {%- set columns = var('mimic_columns')[table_name] -%}
  {%- set _lineage = source('mimic', table_name) -%}
  {%- if table_name in files -%}
    {%- set path = files[table_name] -%}
  {%- elif execute -%}
    {{ exceptions.raise_compiler_error(
        "dbt var 'mimic_files' has no file for MIMIC-III table '" ~ table_name ~ "'. Pass "
        ~ "--vars '{\"mimic_files\": {\"" ~ table_name ~ "\": \"/abs/path/" ~ table_name | upper
        ~ ".csv.gz\", ...}}' (synehrgy_assets.core.mimic_layout.resolve_mimic_dir(dir).dbt_vars()).") }}
  {%- else -%}
    {%- set path = 'mimic_files_var_not_set/' ~ table_name ~ '.csv.gz' -%}
  {%- endif -%}
  (
    select
      {%- for column in columns %}
      "{{ column }}" as "{{ column }}"{{ "," if not loop.last }}
      {%- endfor %}
    from read_csv(
      '{{ path | replace("'", "''") }}',
      header = true,
      all_varchar = true,
      delim = ',',
      quote = '"',
      escape = '"'
    )
  )
{%- endmacro %}
