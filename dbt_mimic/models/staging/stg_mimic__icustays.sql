select
    {{ to_bigint('subject_id') }} as subject_id,
    {{ to_bigint('hadm_id') }} as hadm_id,
    {{ to_bigint('icustay_id') }} as icustay_id,
    {{ to_text('dbsource') }} as dbsource,
    {{ to_text('first_careunit') }} as first_careunit,
    {{ to_text('last_careunit') }} as last_careunit,
    {{ to_timestamp('intime') }} as intime,
    {{ to_timestamp('outtime') }} as outtime
from {{ read_mimic_table('icustays') }}
