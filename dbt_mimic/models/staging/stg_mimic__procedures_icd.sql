-- icd9_code stays VARCHAR: leading zeros are part of the code (0066 != 066 != 66).
select
    {{ to_bigint('subject_id') }} as subject_id,
    {{ to_bigint('hadm_id') }} as hadm_id,
    {{ to_integer('seq_num') }} as seq_num,
    upper({{ to_text('icd9_code') }}) as icd9_code
from {{ read_mimic_table('procedures_icd') }}
