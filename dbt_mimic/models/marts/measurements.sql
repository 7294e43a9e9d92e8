-- Long time series of the 53 variables: kept rows of int_measurements_classified.
-- Written in (subject_id, icustay_id, hours, variable) order, the order the tokenizer needs:
-- sorting once here lets every reader scan the table in its stored order instead of sorting
-- 10^7-10^8 rows on each read (see docs/staging.md, "Stored order").
select
    cast(subject_id as bigint) as subject_id,
    cast(icustay_id as bigint) as icustay_id,
    cast(hours as double) as hours,
    cast(variable as varchar) as variable,
    cast(value as double) as value,
    cast(value_text as varchar) as value_text
from {{ ref('int_measurements_classified') }}
where status = 'kept'
order by subject_id, icustay_id, hours, variable
