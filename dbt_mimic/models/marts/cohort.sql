-- One row per patient with at least one kept visit.
select
    cast(subject_id as bigint) as subject_id,
    cast(any_value(gender) as varchar) as gender,
    cast(count(*) as integer) as n_visits,
    cast(min(intime) as timestamp) as first_intime
from {{ ref('visits') }}
group by subject_id
order by subject_id
