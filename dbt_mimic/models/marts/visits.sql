-- One row per kept ICU stay (a visit), chronological per patient.
with kept as (
    select * from {{ ref('int_icustays_classified') }}
    where drop_reason is null
),

ordered as (
    select
        *,
        row_number() over per_patient - 1 as visit_index,
        lag(outtime) over per_patient as previous_outtime
    from kept
    window per_patient as (partition by subject_id order by intime, icustay_id)
)

select
    cast(subject_id as bigint) as subject_id,
    cast(hadm_id as bigint) as hadm_id,
    cast(icustay_id as bigint) as icustay_id,
    cast(visit_index as integer) as visit_index,
    cast(intime as timestamp) as intime,
    cast(outtime as timestamp) as outtime,
    cast(admittime as timestamp) as admittime,
    cast(dischtime as timestamp) as dischtime,
    cast(date_diff('second', intime, outtime) / 3600.0 as double) as los_hours,
    cast(date_diff('second', previous_outtime, intime) / 3600.0 as double) as hours_since_previous_visit,
    cast(age_years as double) as age_years,
    cast(age_is_capped as boolean) as age_is_capped,
    cast(gender as varchar) as gender,
    cast(ethnicity_group as varchar) as ethnicity_group,
    cast(insurance as varchar) as insurance,
    cast(admission_type as varchar) as admission_type,
    cast(first_careunit as varchar) as first_careunit,
    cast(lower(trim(dbsource)) as varchar) as icu_database,
    cast(mortality_inhospital as integer) as mortality_inhospital
from ordered
order by subject_id, visit_index
