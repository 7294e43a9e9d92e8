select
    {{ to_bigint('subject_id') }} as subject_id,
    upper({{ to_text('gender') }}) as gender,
    {{ to_timestamp('dob') }} as dob,
    {{ to_timestamp('dod') }} as dod,
    {{ to_integer('expire_flag') }} as expire_flag
from {{ read_mimic_table('patients') }}
