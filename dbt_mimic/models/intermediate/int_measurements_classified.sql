-- Every candidate measurement row attached to an ICU stay, parsed, converted and classified.
-- `status` = 'kept' rows become the `measurements` mart; the others are counted in the audit.
{%- set tolerance = var('stay_window_tolerance_hours') %}
-- int_events_filtered is referenced directly in both branches (no shared CTE): DuckDB would
-- materialize a CTE used twice in memory, ~10^8 rows at full scale.
with items as (
    select itemid, source_table = 'labevents' as is_labevents, variable, conversion
    from {{ ref('variable_itemids') }}
),

kept_stays as (
    select subject_id, hadm_id, icustay_id, intime, outtime
    from {{ ref('int_icustays_classified') }}
    where drop_reason is null
),

-- Rows that carry an ICUSTAY_ID (CHARTEVENTS): that stay. A stay that is not kept (e.g. a
-- patient under 18) leaves the row unattached, recorded as dropped_stay_not_kept.
by_icustay as (
    select
        i.variable, i.conversion, e.subject_id, e.icustay_id,
        e.charttime, e.value, e.valuenum, e.is_error, e.valuenum_is_invalid,
        s.intime, s.outtime, s.icustay_id is not null as stay_is_kept
    from {{ ref('int_events_filtered') }} as e
    inner join items as i on i.itemid = e.itemid and i.is_labevents = e.is_labevents
    left join kept_stays as s on s.icustay_id = e.icustay_id
    where e.icustay_id is not null
),

-- Rows without ICUSTAY_ID (all LABEVENTS, a few CHARTEVENTS): the kept stay of the same
-- admission whose window (with tolerance) contains CHARTTIME; inside the strict window first,
-- then the nearest edge, when windows of two stays overlap. Unattached rows are not ICU data.
by_window as (
    select
        i.variable, i.conversion, e.subject_id, s.icustay_id,
        e.charttime, e.value, e.valuenum, e.is_error, e.valuenum_is_invalid,
        s.intime, s.outtime, true as stay_is_kept
    from {{ ref('int_events_filtered') }} as e
    inner join items as i on i.itemid = e.itemid and i.is_labevents = e.is_labevents
    inner join kept_stays as s
        on s.hadm_id = e.hadm_id
        and e.charttime >= s.intime - interval ({{ tolerance }}) hour
        and e.charttime <= s.outtime + interval ({{ tolerance }}) hour
    where e.icustay_id is null
    qualify row_number() over (
        partition by e.is_labevents, e.row_id, e.itemid, e.charttime
        order by
            (e.charttime between s.intime and s.outtime) desc,
            least(abs(date_diff('second', s.intime, e.charttime)), abs(date_diff('second', s.outtime, e.charttime))),
            s.icustay_id
    ) = 1
),

attached as (
    select * from by_icustay
    union all
    select * from by_window
),

variables as (
    select variable, kind, valid_low, valid_high from {{ ref('variables') }}
),

categories as (
    select variable, raw_value, value, value_text, is_canonical from {{ ref('categorical_value_map') }}
),

parsed as (
    select
        a.*,
        v.kind,
        v.valid_low,
        v.valid_high,
        {{ parse_number('a.valuenum', 'a.value') }} as number,
        -- Only categorical rows need the text key; NULL elsewhere keeps the big scan cheap.
        case when v.kind = 'categorical' then lower(trim(a.value)) end as text_key
    from attached as a
    inner join variables as v on v.variable = a.variable
),

harmonised as (
    select
        p.*,
        case
            -- Categorical: the text of VALUE (trimmed, case-insensitive) through the seed map;
            -- else an integer score that is a canonical category of the variable.
            when p.kind = 'categorical' then coalesce(by_text.value, by_score.value)
            -- A Fahrenheit ITEMID holding a value below 50 was entered in Celsius already.
            when p.conversion = 'fahrenheit_to_celsius' and p.number >= 50 then (p.number - 32) * 5.0 / 9.0
            when p.conversion = 'percent_to_fraction' and p.number > 1 then p.number / 100.0
            when p.conversion = 'fraction_to_percent' and p.number <= 1 then p.number * 100.0
            when p.conversion = 'inch_to_centimetre' then p.number * 2.54
            else p.number
        end as clean_value,
        case when p.kind = 'categorical' then coalesce(by_text.value_text, by_score.value_text) end as clean_text
    from parsed as p
    left join categories as by_text
        on by_text.variable = p.variable
        and by_text.raw_value = p.text_key
    left join categories as by_score
        on p.kind = 'categorical'
        and by_score.is_canonical
        and by_score.variable = p.variable
        and by_score.value = p.number
)

select
    variable,
    subject_id,
    icustay_id,
    date_diff('second', intime, charttime) / 3600.0 as hours,
    clean_value as value,
    clean_text as value_text,
    valuenum_is_invalid,
    case
        when not stay_is_kept then 'dropped_stay_not_kept'
        when is_error then 'dropped_error_flag'
        when charttime is null
            or charttime < intime - interval ({{ tolerance }}) hour
            or charttime > outtime + interval ({{ tolerance }}) hour
            then 'dropped_outside_stay_window'
        when clean_value is null then 'dropped_unparseable'
        -- ±inf / NaN as written ('inf', '1e309') or from a conversion that overflowed (±1e308 × 100):
        -- their own reason, never folded into the range check.
        when not isfinite(clean_value) then 'dropped_not_finite'
        when clean_value < valid_low or clean_value > valid_high then 'dropped_out_of_range'
        else 'kept'
    end as status
from harmonised
