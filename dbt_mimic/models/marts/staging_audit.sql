-- What staging kept and dropped, as (section, item, metric, n). Aggregates only, no patient rows.
with stays as (
    select * from {{ ref('int_icustays_classified') }}
),

reasons as (
    select * from (values ('missing_ids'), ('missing_intime_or_outtime'), ('outtime_before_intime'),
                          ('missing_admission'), ('dob_unparseable'), ('missing_patient_or_dob'),
                          ('dob_after_admission'), ('dob_implausible'), ('gender_not_m_or_f'),
                          ('age_under_18')) as r(reason)
),

code_types as (
    select * from (values ('diagnosis'), ('procedure')) as t(code_type)
),

codes as (
    select
        c.*,
        v.hadm_id is not null as admission_has_visit,
        a.hadm_id is null as admission_is_orphan
    from {{ ref('int_admission_codes') }} as c
    left join (select distinct hadm_id from {{ ref('visits') }}) as v on v.hadm_id = c.hadm_id
    left join {{ ref('stg_mimic__admissions') }} as a on a.hadm_id = c.hadm_id
),

candidates as (
    select subject_id, icustay_id, status, valuenum_is_invalid from {{ ref('int_measurements_classified') }}
),

-- CHARTEVENTS rows whose ICUSTAY_ID is in no row of ICUSTAYS (orphans; a subset of
-- dropped_stay_not_kept, which also holds the rows of stays dropped by a rule or a defect)
orphan_rows as (
    select c.subject_id
    from candidates as c
    where c.status = 'dropped_stay_not_kept'
        and not exists (select 1 from stays as s where s.icustay_id = c.icustay_id)
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
    from reasons as r
    left join stays as s on s.drop_reason = r.reason
    group by r.reason
    union all
    -- patients with at least one stay dropped for the reason (the loss checks' patient shares)
    select 'icustays', '', 'patients_dropped_' || r.reason, count(distinct s.subject_id)
    from reasons as r
    left join stays as s on s.drop_reason = r.reason
    group by r.reason
    union all
    select 'icustays', '', 'patients_raw', count(distinct subject_id) from stays
    union all
    -- patients with a stay dropped for a data defect (every reason but the age_under_18 rule)
    select 'icustays', '', 'patients_dropped_bad_data', count(distinct subject_id)
    from stays where drop_reason is not null and drop_reason <> 'age_under_18'
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
    -- per code type, with 0 when the table is empty (header only), so the rows always exist
    select 'codes', t.code_type, 'raw', count(c.code_type)
    from code_types as t left join codes as c on c.code_type = t.code_type group by t.code_type
    union all
    select 'codes', t.code_type, 'dropped_null_code', count(c.code_type) filter (where c.icd9_code is null)
    from code_types as t left join codes as c on c.code_type = t.code_type group by t.code_type
    union all
    -- rows whose HADM_ID is not in ADMISSIONS at all (orphans; a subset of the next metric)
    select 'codes', t.code_type, 'orphan_admission',
        count(c.code_type) filter (where c.icd9_code is not null and c.admission_is_orphan)
    from code_types as t left join codes as c on c.code_type = t.code_type group by t.code_type
    union all
    select 'codes', t.code_type, 'admission_without_kept_visit',
        count(c.code_type) filter (where c.icd9_code is not null and not c.admission_has_visit)
    from code_types as t left join codes as c on c.code_type = t.code_type group by t.code_type
    union all
    select 'codes', t.code_type, 'attached_to_visits', coalesce(max(a.n), 0)
    from code_types as t left join attached_codes as a on a.code_type = t.code_type group by t.code_type
    union all
    select 'codes', '', 'patients_raw', count(distinct subject_id) from codes
    union all
    select 'codes', '', 'patients_dropped', count(distinct subject_id)
    from codes where icd9_code is null or admission_is_orphan
    union all
    select 'codes', 'phenotype', 'visit_labels', count(*) from {{ ref('visit_phenotypes') }}
    union all
    select 'measurements', '', 'patients_with_candidates', count(distinct subject_id) from candidates
    union all
    select 'measurements', '', 'patients_dropped_unparseable_or_out_of_range', count(distinct subject_id)
    from candidates where status in ('dropped_unparseable', 'dropped_out_of_range', 'dropped_not_finite')
    union all
    select 'measurements', '', 'rows_of_unknown_stay', count(*) from orphan_rows
    union all
    select 'measurements', '', 'patients_with_rows_of_unknown_stay', count(distinct subject_id) from orphan_rows
    union all
    -- VALUENUM present but not a number: VALUE was parsed instead (kept or dropped_unparseable)
    select 'measurements', '', 'valuenum_not_numeric', count(*) filter (where valuenum_is_invalid) from candidates
    union all
    select 'measurements', '', 'patients_valuenum_not_numeric', count(distinct subject_id)
    from candidates where valuenum_is_invalid
    union all
    select 'measurements', variable, 'candidate', n_candidate from {{ ref('int_measurement_audit') }}
    union all
    select 'measurements', variable, 'kept', n_kept from {{ ref('int_measurement_audit') }}
    union all
    select 'measurements', variable, 'dropped_out_of_range', n_dropped_out_of_range from {{ ref('int_measurement_audit') }}
    union all
    select 'measurements', variable, 'dropped_unparseable', n_dropped_unparseable from {{ ref('int_measurement_audit') }}
    union all
    select 'measurements', variable, 'dropped_not_finite', n_dropped_not_finite from {{ ref('int_measurement_audit') }}
    union all
    select 'measurements', '', 'patients_dropped_not_finite', count(distinct subject_id)
    from candidates where status = 'dropped_not_finite'
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
