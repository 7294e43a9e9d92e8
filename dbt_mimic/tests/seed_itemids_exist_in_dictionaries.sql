{{ config(severity='warn', meta={'dagster': {'ref': {'name': 'variable_itemids'}}}) }}
-- meta.dagster.ref: a singular test on several models is a Dagster asset check only when it names
-- the asset it belongs to (here the seed), so the warning shows as a WARN check in Dagster.
-- Seed ITEMIDs are listed in D_ITEMS (chartevents) / D_LABITEMS (labevents). A warning only: a
-- raw set with trimmed dictionaries (e.g. a synthetic one) is still usable.
select i.itemid, i.source_table
from {{ ref('variable_itemids') }} as i
where (i.source_table = 'chartevents'
       and i.itemid not in (select itemid from {{ ref('stg_mimic__d_items') }} where itemid is not null))
   or (i.source_table = 'labevents'
       and i.itemid not in (select itemid from {{ ref('stg_mimic__d_labitems') }} where itemid is not null))
