select
    {{ to_bigint('subject_id') }} as subject_id,
    {{ to_bigint('hadm_id') }} as hadm_id,
    {{ to_timestamp('admittime') }} as admittime,
    {{ to_timestamp('dischtime') }} as dischtime,
    {{ to_timestamp('deathtime') }} as deathtime,
    {{ to_text('admission_type') }} as admission_type,
    {{ to_text('insurance') }} as insurance,
    {{ to_text('ethnicity') }} as ethnicity,
    {{ to_integer('hospital_expire_flag') }} as hospital_expire_flag
from {{ read_mimic_table('admissions') }}
