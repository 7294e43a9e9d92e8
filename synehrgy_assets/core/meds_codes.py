"""`metadata/codes.parquet` of a MEDS export (`core/meds.py`): one row per code in the data, with a
description (ICD-9 titles from the source's dictionaries, variable labels and units from the variables
seed) and the parent codes of the ICD-9 codes."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synehrgy_assets.core.meds import CODES_SCHEMA, MedsExportError, MedsSource, _existing_relations, _exists


def _icd_titles(con, source: MedsSource) -> tuple[pa.Table, list[str]]:
    """ICD-9 long titles from the source's dictionaries (for the real marts: the staging views over the raw
    files), where present and readable."""
    existing = _existing_relations(con)
    parts, used = [], []
    for code_type, view in source.icd_titles:
        if not _exists(existing, view):
            continue
        try:
            parts.append(
                con.sql(
                    f"select '{code_type}' as code_type, icd9_code, any_value(long_title) as long_title "
                    f"from {view} where icd9_code is not null group by icd9_code"
                ).to_arrow_table()
            )
            used.append(view)
        except Exception:  # noqa: BLE001 - a view over a raw file that moved: descriptions fall back
            continue
    schema = pa.schema([("code_type", pa.string()), ("icd9_code", pa.string()), ("long_title", pa.string())])
    tables = [t.select(["code_type", "icd9_code", "long_title"]).cast(schema) for t in parts]
    return (pa.concat_tables(tables) if tables else schema.empty_table()), used


def write_codes(con, code_names: list[str], variables_csv: Path, path: Path, source: MedsSource) -> list[str]:
    titles, used = _icd_titles(con, source)
    if not variables_csv.is_file():
        raise MedsExportError(f"export_meds: variables seed {variables_csv} not found (columns variable,label,kind,unit)")
    codes = pa.table({"code": pa.array(sorted(code_names), pa.string())})
    con.register("_meds_codes", codes)
    con.register("_meds_icd_titles", titles)
    try:
        table = con.sql(
            f"""
            with c as (
                select code, split_part(code, '//', 1) as family,
                       case when contains(code, '//') then substr(code, strpos(code, '//') + 2) end as rest
                from _meds_codes
            ),
            var as (
                select variable, label, kind, unit
                from read_csv('{_sql_literal(variables_csv)}', header = true, all_varchar = true)
            )
            select c.code,
                case c.family
                    when 'MEDS_BIRTH' then 'Birth; time derived from the age at the first ICU admission. text_value '
                        || 'AGE_CAPPED_AT_90 when MIMIC shifted the date of birth (true age > 89 unknown)'
                    when 'MEDS_DEATH' then 'In-hospital death; time = ICU discharge of the last ICU stay of the admission'
                    when 'GENDER' then 'Gender ' || c.rest
                    when 'ETHNICITY' then 'Ethnicity group ' || c.rest || ' (recorded per hospital admission)'
                    when 'INSURANCE' then 'Insurance ' || c.rest || ' (recorded per hospital admission)'
                    when 'HOSPITAL_ADMISSION' then 'Hospital admission of type ' || c.rest
                        || '; time = first ICU admission of the hospital stay'
                    when 'ICU_ADMISSION' then 'ICU admission, first care unit ' || c.rest
                    when 'ICU_DISCHARGE' then 'ICU discharge'
                    when 'ICD9CM' then coalesce(d.long_title, 'ICD-9-CM diagnosis ' || c.rest)
                        || ' (coded at hospital discharge; time = last ICU discharge of the admission)'
                    when 'ICD9PROC' then coalesce(p.long_title, 'ICD-9-CM procedure ' || c.rest)
                        || ' (coded at hospital discharge; time = last ICU discharge of the admission)'
                    when 'PHENOTYPE' then 'HCUP CCS benchmark phenotype ' || c.rest
                        || ' (from the admission''s diagnoses; time = last ICU discharge of the admission)'
                    when 'MEASUREMENT' then coalesce(
                        var.label || ' (' || var.unit || case when var.kind = 'categorical'
                            then '; numeric_value = score, text_value = category)' else ')' end,
                        c.rest)
                    else c.code
                end as description,
                case c.family
                    when 'ICD9CM' then ['ICD9CM/' || case
                        when c.rest like 'E%' and length(c.rest) > 4 then left(c.rest, 4) || '.' || substr(c.rest, 5)
                        when c.rest not like 'E%' and length(c.rest) > 3 then left(c.rest, 3) || '.' || substr(c.rest, 4)
                        else c.rest end]
                    when 'ICD9PROC' then ['ICD9Proc/' || case
                        when length(c.rest) > 2 then left(c.rest, 2) || '.' || substr(c.rest, 3) else c.rest end]
                end as parent_codes
            from c
            left join _meds_icd_titles d on c.family = 'ICD9CM' and d.code_type = 'diagnosis' and d.icd9_code = c.rest
            left join _meds_icd_titles p on c.family = 'ICD9PROC' and p.code_type = 'procedure' and p.icd9_code = c.rest
            left join var on c.family = 'MEASUREMENT' and var.variable = c.rest
            order by c.code
            """
        ).to_arrow_table()
    finally:
        con.unregister("_meds_codes")
        con.unregister("_meds_icd_titles")
    if table.num_rows != len(code_names):
        raise RuntimeError(f"export_meds: codes.parquet has {table.num_rows} rows for {len(code_names)} codes")
    pq.write_table(table.cast(CODES_SCHEMA), path, compression="zstd")
    return used


def _sql_literal(path: Path) -> str:
    return str(path).replace("'", "''")
