select
    upper({{ to_text('icd9_code') }}) as icd9_code,
    {{ to_text('short_title') }} as short_title,
    {{ to_text('long_title') }} as long_title
from {{ read_mimic_table('d_icd_diagnoses') }}
