{{ config(materialized='view') }}
-- ICD-9 diagnosis and procedure rows of every admission, as one long list. NULL codes are kept
-- here (flagged) so that staging_audit can count them; visit_codes drops them.
select subject_id, hadm_id, 'diagnosis' as code_type, icd9_code, seq_num
from {{ ref('stg_mimic__diagnoses_icd') }}
union all
select subject_id, hadm_id, 'procedure' as code_type, icd9_code, seq_num
from {{ ref('stg_mimic__procedures_icd') }}
