-- CHARTEVENTS and LABEVENTS rows of the seed's ITEMIDs, with their variable and unit conversion.
-- A table: it is read twice by int_measurements_classified and is much smaller than the raw files.
with items as (
    select itemid, source_table, variable, conversion from {{ ref('variable_itemids') }}
),

events as (
    select
        'chartevents' as source_table, row_id, subject_id, hadm_id, icustay_id, itemid, charttime,
        value, valuenum, is_error
    from {{ ref('stg_mimic__chartevents') }}
    union all
    select
        'labevents' as source_table, row_id, subject_id, hadm_id, cast(null as bigint) as icustay_id,
        itemid, charttime, value, valuenum, false as is_error
    from {{ ref('stg_mimic__labevents') }}
)

select e.*, i.variable, i.conversion
from events as e
inner join items as i on i.itemid = e.itemid and i.source_table = e.source_table
