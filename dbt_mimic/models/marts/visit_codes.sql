-- ICD-9 codes of each visit's hospital admission (every ICU stay of the admission gets them).
select
    cast(v.subject_id as bigint) as subject_id,
    cast(v.icustay_id as bigint) as icustay_id,
    cast(c.code_type as varchar) as code_type,
    cast(c.icd9_code as varchar) as icd9_code,
    cast(c.seq_num as integer) as seq_num
from {{ ref('int_admission_codes') }} as c
inner join {{ ref('visits') }} as v on v.hadm_id = c.hadm_id
where c.icd9_code is not null
order by v.subject_id, v.icustay_id, c.code_type, c.seq_num nulls last, c.icd9_code
