select
    {{ to_bigint('subject_id') }} as subject_id,
    upper({{ to_text('gender') }}) as gender,
    {{ to_timestamp('dob') }} as dob,
    -- A DOB that is present but not a timestamp (counted: the stay is dropped as dob_unparseable).
    ({{ to_text('dob') }} is not null and {{ to_timestamp('dob') }} is null) as dob_is_invalid,
    {{ to_timestamp('dod') }} as dod,
    {{ to_integer('expire_flag') }} as expire_flag
from {{ read_mimic_table('patients') }}
