-- What staging kept and dropped, as (section, item, metric, n). Aggregates only, no patient rows.
with stays as (
    select * from {{ ref('int_icustays_classified') }}
),

codes as (
    select c.*, v.hadm_id is not null as admission_has_visit
    from {{ ref('int_admission_codes') }} as c
    left join (select distinct hadm_id from {{ ref('visits') }}) as v on v.hadm_id = c.hadm_id
),

attached_codes as (
    select code_type, count(*) as n from {{ ref('visit_codes') }} group by code_type
),

audit as (
    select 'patients' as section, '' as item, 'raw' as metric, count(*) as n
    from {{ ref('stg_mimic__patients') }}
    union all
    select 'patients', '', 'with_kept_visit', count(*) from {{ ref('cohort') }}
    union all
    select 'admissions', '', 'raw', count(*) from {{ ref('stg_mimic__admissions') }}
    union all
    select 'admissions', '', 'with_kept_visit', count(distinct hadm_id) from {{ ref('visits') }}
    union all
    select 'icustays', '', 'raw', count(*) from stays
    union all
    select 'icustays', '', 'kept', count(*) from stays where drop_reason is null
    union all
    -- every reason, with 0 when it did not occur, so the audit has a stable set of rows
    select 'icustays', '', 'dropped_' || r.reason, count(s.drop_reason)
    from (values ('missing_ids'), ('missing_intime_or_outtime'), ('outtime_before_intime'),
                 ('missing_admission'), ('missing_patient_or_dob'), ('gender_not_m_or_f'),
                 ('age_under_18')) as r(reason)
    left join stays as s on s.drop_reason = r.reason
    group by r.reason
    union all
    select 'icustays', '', 'kept_age_capped', count(*) from stays where drop_reason is null and age_is_capped
    union all
    select 'icustays', '', 'kept_ethnicity_not_in_seed', count(*)
    from stays where drop_reason is null and not ethnicity_in_seed
    union all
    select 'icustays', '', 'kept_without_measurements', count(*)
    from {{ ref('visits') }} as v
    where not exists (select 1 from {{ ref('measurements') }} as m where m.icustay_id = v.icustay_id)
    union all
    select 'codes', code_type, 'raw', count(*) from codes group by code_type
    union all
    select 'codes', code_type, 'dropped_null_code', count(*) filter (where icd9_code is null)
    from codes group by code_type
    union all
    select 'codes', code_type, 'admission_without_kept_visit',
        count(*) filter (where icd9_code is not null and not admission_has_visit)
    from codes group by code_type
    union all
    select 'codes', code_type, 'attached_to_visits', n from attached_codes
    union all
    select 'codes', 'phenotype', 'visit_labels', count(*) from {{ ref('visit_phenotypes') }}
    union all
    select 'measurements', variable, 'candidate', n_candidate from {{ ref('int_measurement_audit') }}
    union all
    select 'measurements', variable, 'kept', n_kept from {{ ref('int_measurement_audit') }}
    union all
    select 'measurements', variable, 'dropped_out_of_range', n_dropped_out_of_range from {{ ref('int_measurement_audit') }}
    union all
    select 'measurements', variable, 'dropped_unparseable', n_dropped_unparseable from {{ ref('int_measurement_audit') }}
    union all
    select 'measurements', variable, 'dropped_error_flag', n_dropped_error_flag from {{ ref('int_measurement_audit') }}
    union all
    select 'measurements', variable, 'dropped_outside_stay_window', n_dropped_outside_stay_window
    from {{ ref('int_measurement_audit') }}
    union all
    select 'measurements', variable, 'dropped_stay_not_kept', n_dropped_stay_not_kept from {{ ref('int_measurement_audit') }}
)

select
    cast(section as varchar) as section,
    cast(item as varchar) as item,
    cast(metric as varchar) as metric,
    cast(n as bigint) as n
from audit
order by section, item, metric
