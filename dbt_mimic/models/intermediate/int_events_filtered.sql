-- CHARTEVENTS and LABEVENTS rows of the seed's ITEMIDs (the staging views already filter them).
-- A table: it is read twice by int_measurements_classified and is much smaller than the raw files.
-- Only ids, numbers, timestamps and VALUE are stored: per-row strings (table name, variable,
-- conversion) roughly doubled the cost of writing this ~10^8-row table at full scale
-- (docs/benchmarks.md); int_measurements_classified joins the 126-row item seed back in.
select
    false as is_labevents, row_id, subject_id, hadm_id, icustay_id, itemid, charttime,
    value, valuenum, is_error, valuenum_is_invalid
from {{ ref('stg_mimic__chartevents') }}
union all
select
    true as is_labevents, row_id, subject_id, hadm_id, cast(null as bigint) as icustay_id,
    itemid, charttime, value, valuenum, false as is_error, valuenum_is_invalid
from {{ ref('stg_mimic__labevents') }}
