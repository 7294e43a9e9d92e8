-- Positive HCUP CCS benchmark phenotype labels: a visit has a phenotype when any diagnosis code
-- of its admission is listed for that phenotype in the seed.
select distinct
    cast(c.subject_id as bigint) as subject_id,
    cast(c.icustay_id as bigint) as icustay_id,
    cast(p.phenotype as varchar) as phenotype
from {{ ref('visit_codes') }} as c
inner join {{ ref('phenotype_icd9_codes') }} as p on p.icd9_code = c.icd9_code
where c.code_type = 'diagnosis'
order by subject_id, icustay_id, phenotype
