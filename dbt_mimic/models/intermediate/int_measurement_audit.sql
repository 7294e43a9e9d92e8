-- Per variable: candidate rows attached to ICU stays and what happened to them.
with classified as (
    select variable, status, count(*) as n_rows
    from {{ ref('int_measurements_classified') }}
    group by variable, status
)

select
    v.variable,
    v.kind,
    cast(coalesce(sum(c.n_rows), 0) as bigint) as n_candidate,
    cast(coalesce(sum(c.n_rows) filter (where c.status = 'kept'), 0) as bigint) as n_kept,
    cast(coalesce(sum(c.n_rows) filter (where c.status = 'dropped_out_of_range'), 0) as bigint) as n_dropped_out_of_range,
    cast(coalesce(sum(c.n_rows) filter (where c.status = 'dropped_unparseable'), 0) as bigint) as n_dropped_unparseable,
    cast(coalesce(sum(c.n_rows) filter (where c.status = 'dropped_not_finite'), 0) as bigint) as n_dropped_not_finite,
    cast(coalesce(sum(c.n_rows) filter (where c.status = 'dropped_error_flag'), 0) as bigint) as n_dropped_error_flag,
    cast(coalesce(sum(c.n_rows) filter (where c.status = 'dropped_outside_stay_window'), 0) as bigint) as n_dropped_outside_stay_window,
    cast(coalesce(sum(c.n_rows) filter (where c.status = 'dropped_stay_not_kept'), 0) as bigint) as n_dropped_stay_not_kept
from {{ ref('variables') }} as v
left join classified as c on c.variable = v.variable
group by v.variable, v.kind
order by v.variable
