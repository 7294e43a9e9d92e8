select
    {{ to_integer('itemid') }} as itemid,
    {{ to_text('label') }} as label,
    {{ to_text('dbsource') }} as dbsource,
    lower({{ to_text('linksto') }}) as linksto,
    {{ to_text('unitname') }} as unitname
from {{ read_mimic_table('d_items') }}
