-- The 25 HCUP CCS benchmark phenotypes, each with exactly one type.
select count(distinct phenotype) as n_phenotypes
from {{ ref('phenotype_icd9_codes') }}
having count(distinct phenotype) <> 25 or count(distinct phenotype || '|' || phenotype_type) <> 25
