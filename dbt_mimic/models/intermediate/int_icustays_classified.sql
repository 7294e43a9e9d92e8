-- Every raw ICU stay with its admission and patient, the derived covariates, and why it is
-- dropped (drop_reason NULL = kept). Reasons are checked in the order written; the first wins.
with stays as (
    select * from {{ ref('stg_mimic__icustays') }}
),

admissions as (
    select * from {{ ref('stg_mimic__admissions') }}
),

patients as (
    select * from {{ ref('stg_mimic__patients') }}
),

ethnicity_map as (
    select upper(trim(ethnicity)) as ethnicity_key, ethnicity_group
    from {{ ref('ethnicity_groups') }}
),

joined as (
    select
        s.subject_id,
        s.hadm_id,
        s.icustay_id,
        s.dbsource,
        s.first_careunit,
        s.last_careunit,
        s.intime,
        s.outtime,
        a.hadm_id is not null as has_admission,
        a.admittime,
        a.dischtime,
        a.deathtime,
        a.admission_type,
        a.insurance,
        a.ethnicity,
        a.hospital_expire_flag,
        p.subject_id is not null as has_patient,
        p.gender,
        p.dob,
        coalesce(p.dob_is_invalid, false) as dob_is_invalid,
        -- Age at ICU admission in years of 365.2425 days. Patients older than 89 have their DOB
        -- shifted by ~300 years in MIMIC-III, so this is ~300 for them (capped in `visits`).
        date_diff('second', p.dob, s.intime) / (365.2425 * 86400.0) as raw_age_years
    from stays as s
    left join admissions as a on a.hadm_id = s.hadm_id
    left join patients as p on p.subject_id = s.subject_id
)

select
    j.*,
    least(j.raw_age_years, 90.0) as age_years,
    j.raw_age_years >= 90 as age_is_capped,
    coalesce(
        e.ethnicity_group,
        -- Strings missing from the seed fall back to their MIMIC prefix (full release has more).
        case
            when j.ethnicity is null then 'UNKNOWN'
            when upper(j.ethnicity) like 'WHITE%' then 'WHITE'
            when upper(j.ethnicity) like 'BLACK%' then 'BLACK'
            when upper(j.ethnicity) like 'HISPANIC%' then 'HISPANIC'
            when upper(j.ethnicity) like 'ASIAN%' then 'ASIAN'
            else 'OTHER'
        end
    ) as ethnicity_group,
    e.ethnicity_group is not null as ethnicity_in_seed,
    case
        when j.hospital_expire_flag = 1 then 1
        when j.deathtime is not null and j.deathtime between j.admittime and j.dischtime then 1
        else 0
    end as mortality_inhospital,
    case
        when j.icustay_id is null or j.subject_id is null then 'missing_ids'
        when j.intime is null or j.outtime is null then 'missing_intime_or_outtime'
        when j.outtime < j.intime then 'outtime_before_intime'
        when not j.has_admission then 'missing_admission'
        when j.has_patient and j.dob_is_invalid then 'dob_unparseable'
        when not j.has_patient or j.dob is null then 'missing_patient_or_dob'
        when j.dob > coalesce(j.admittime, j.intime) then 'dob_after_admission'
        when j.raw_age_years > {{ var('max_raw_age_years') }} then 'dob_implausible'
        when j.gender is null or j.gender not in ('M', 'F') then 'gender_not_m_or_f'
        when j.raw_age_years < 18 then 'age_under_18'
    end as drop_reason
from joined as j
left join ethnicity_map as e on e.ethnicity_key = upper(trim(j.ethnicity))
