{{ config(meta={'dagster': {'ref': {'name': 'variables'}}}) }}
-- Every categorical variable has categories in the map, and only categorical variables do.
select v.variable, v.kind, count(m.variable) as n_categories
from {{ ref('variables') }} as v
left join {{ ref('categorical_value_map') }} as m on m.variable = v.variable
group by v.variable, v.kind
having (v.kind = 'categorical') <> (count(m.variable) > 0)
