-- CHARTEVENTS has ~330 M rows in the full release. The only work done on every raw row is a hash
-- semi-join of its ITEMID text against the ~90 ITEMIDs of the seed; everything else (casts, text
-- parsing, window attachment) runs on the filtered rows only.
with wanted_items as (
    -- Compared as text: no cast on the raw rows (MIMIC writes ITEMIDs as plain integers).
    select cast(itemid as varchar) as itemid from {{ ref('variable_itemids') }} where source_table = 'chartevents'
),

raw as (
    select * from {{ read_mimic_table('chartevents') }}
    where itemid in (select itemid from wanted_items)
)

select
    {{ to_bigint('row_id') }} as row_id,
    {{ to_bigint('subject_id') }} as subject_id,
    {{ to_bigint('hadm_id') }} as hadm_id,
    {{ to_bigint('icustay_id') }} as icustay_id,
    try_cast(itemid as integer) as itemid,
    {{ to_timestamp('charttime') }} as charttime,
    "value" as value,
    {{ to_double('valuenum') }} as valuenum,
    -- VALUENUM present but not a number (counted in staging_audit; VALUE is parsed instead).
    ({{ to_text('valuenum') }} is not null and {{ to_double('valuenum') }} is null) as valuenum_is_invalid,
    -- ERROR is 1 for rows a clinician marked as erroneous (MetaVision); NULL on CareVue rows.
    coalesce({{ to_integer('error') }}, 0) = 1 as is_error
from raw
