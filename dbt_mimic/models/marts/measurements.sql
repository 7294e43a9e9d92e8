-- Long time series of the 42 variables: kept rows of int_measurements_classified.
-- Not sorted (a sort of ~10^8 rows costs more than it saves); readers order by what they need.
select
    cast(subject_id as bigint) as subject_id,
    cast(icustay_id as bigint) as icustay_id,
    cast(hours as double) as hours,
    cast(variable as varchar) as variable,
    cast(value as double) as value,
    cast(value_text as varchar) as value_text
from {{ ref('int_measurements_classified') }}
where status = 'kept'
