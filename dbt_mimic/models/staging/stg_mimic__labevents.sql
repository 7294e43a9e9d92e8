-- LABEVENTS has no ICUSTAY_ID; rows are attached to ICU stays later by HADM_ID and time.
-- Filtered to the seed's ITEMIDs first, like CHARTEVENTS.
with wanted_items as (
    -- Compared as text: no cast on the raw rows (MIMIC writes ITEMIDs as plain integers).
    select cast(itemid as varchar) as itemid from {{ ref('variable_itemids') }} where source_table = 'labevents'
),

raw as (
    select * from {{ read_mimic_table('labevents') }}
    where itemid in (select itemid from wanted_items)
)

select
    {{ to_bigint('row_id') }} as row_id,
    {{ to_bigint('subject_id') }} as subject_id,
    {{ to_bigint('hadm_id') }} as hadm_id,
    try_cast(itemid as integer) as itemid,
    {{ to_timestamp('charttime') }} as charttime,
    "value" as value,
    {{ to_double('valuenum') }} as valuenum,
    -- VALUENUM present but not a number (counted in staging_audit; VALUE is parsed instead).
    ({{ to_text('valuenum') }} is not null and {{ to_double('valuenum') }} is null) as valuenum_is_invalid
from raw
