{{ config(meta={'dagster': {'ref': {'name': 'variables'}}}) }}
-- Each of the 53 variables of seed `variables` has at least one ITEMID in seed variable_itemids.
select v.variable
from {{ ref('variables') }} as v
left join {{ ref('variable_itemids') }} as i on i.variable = v.variable
where i.itemid is null
