select
    {{ to_integer('itemid') }} as itemid,
    {{ to_text('label') }} as label,
    {{ to_text('fluid') }} as fluid,
    {{ to_text('category') }} as category
from {{ read_mimic_table('d_labitems') }}
