"""MIMIC-III v1.4 tables: their schemas (official column order) and a fast CSV writer.

Shared by everything that reads or writes the MIMIC layout: the built-in synthetic hospital
(`synthetic_hospital.py`), the writer of synthetic cohorts (`mimic_writer.py`) and the release's
MIMIC-CSV export. Plain Python, no simulation and no patient data here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# ---------------------------------------------------------------------------------------------
# MIMIC-III v1.4 table schemas (official column order; kinds drive CSV formatting)
# ---------------------------------------------------------------------------------------------

INT, FLOAT, STR, TS = "int", "float", "str", "ts"

MIMIC_SCHEMAS: dict[str, tuple[tuple[str, str], ...]] = {
    "PATIENTS": (
        ("row_id", INT), ("subject_id", INT), ("gender", STR), ("dob", TS), ("dod", TS),
        ("dod_hosp", TS), ("dod_ssn", TS), ("expire_flag", INT),
    ),
    "ADMISSIONS": (
        ("row_id", INT), ("subject_id", INT), ("hadm_id", INT), ("admittime", TS),
        ("dischtime", TS), ("deathtime", TS), ("admission_type", STR),
        ("admission_location", STR), ("discharge_location", STR), ("insurance", STR),
        ("language", STR), ("religion", STR), ("marital_status", STR), ("ethnicity", STR),
        ("edregtime", TS), ("edouttime", TS), ("diagnosis", STR),
        ("hospital_expire_flag", INT), ("has_chartevents_data", INT),
    ),
    "ICUSTAYS": (
        ("row_id", INT), ("subject_id", INT), ("hadm_id", INT), ("icustay_id", INT),
        ("dbsource", STR), ("first_careunit", STR), ("last_careunit", STR),
        ("first_wardid", INT), ("last_wardid", INT), ("intime", TS), ("outtime", TS),
        ("los", FLOAT),
    ),
    "DIAGNOSES_ICD": (
        ("row_id", INT), ("subject_id", INT), ("hadm_id", INT), ("seq_num", INT),
        ("icd9_code", STR),
    ),
    "PROCEDURES_ICD": (
        ("row_id", INT), ("subject_id", INT), ("hadm_id", INT), ("seq_num", INT),
        ("icd9_code", STR),
    ),
    "D_ICD_DIAGNOSES": (
        ("row_id", INT), ("icd9_code", STR), ("short_title", STR), ("long_title", STR),
    ),
    "D_ICD_PROCEDURES": (
        ("row_id", INT), ("icd9_code", STR), ("short_title", STR), ("long_title", STR),
    ),
    "CHARTEVENTS": (
        ("row_id", INT), ("subject_id", INT), ("hadm_id", INT), ("icustay_id", INT),
        ("itemid", INT), ("charttime", TS), ("storetime", TS), ("cgid", INT), ("value", STR),
        ("valuenum", FLOAT), ("valueuom", STR), ("warning", INT), ("error", INT),
        ("resultstatus", STR), ("stopped", STR),
    ),
    "LABEVENTS": (
        ("row_id", INT), ("subject_id", INT), ("hadm_id", INT), ("itemid", INT),
        ("charttime", TS), ("value", STR), ("valuenum", FLOAT), ("valueuom", STR),
        ("flag", STR),
    ),
    "D_ITEMS": (
        ("row_id", INT), ("itemid", INT), ("label", STR), ("abbreviation", STR),
        ("dbsource", STR), ("linksto", STR), ("category", STR), ("unitname", STR),
        ("param_type", STR), ("conceptid", INT),
    ),
    "D_LABITEMS": (
        ("row_id", INT), ("itemid", INT), ("label", STR), ("fluid", STR), ("category", STR),
        ("loinc_code", STR),
    ),
}

HOSPITAL_TABLES = tuple(MIMIC_SCHEMAS)  # the synthetic hospital writes all of these

# The other tables of the full release, by their official columns. Nothing generates their rows: a release
# ships them header-only, because pipelines written for MIMIC-III open them (mimic3-benchmarks reads
# OUTPUTEVENTS beside CHARTEVENTS and LABEVENTS). Kinds follow MIMIC-III's column types.
_OTHER_TABLE_COLUMNS = {
    "OUTPUTEVENTS": "row_id subject_id hadm_id icustay_id charttime itemid value valueuom storetime cgid stopped "
                    "newbottle iserror",
    "INPUTEVENTS_CV": "row_id subject_id hadm_id icustay_id charttime itemid amount amountuom rate rateuom storetime "
                      "cgid orderid linkorderid stopped newbottle originalamount originalamountuom originalroute "
                      "originalrate originalrateuom originalsite",
    "INPUTEVENTS_MV": "row_id subject_id hadm_id icustay_id starttime endtime itemid amount amountuom rate rateuom "
                      "storetime cgid orderid linkorderid ordercategoryname secondaryordercategoryname "
                      "ordercomponenttypedescription ordercategorydescription patientweight totalamount "
                      "totalamountuom isopenbag continueinnextdept cancelreason statusdescription comments_editedby "
                      "comments_canceledby comments_date originalamount originalrate",
    "PROCEDUREEVENTS_MV": "row_id subject_id hadm_id icustay_id starttime endtime itemid value valueuom location "
                          "locationcategory storetime cgid orderid linkorderid ordercategoryname "
                          "secondaryordercategoryname ordercategorydescription isopenbag continueinnextdept "
                          "cancelreason statusdescription comments_editedby comments_canceledby comments_date",
    "DATETIMEEVENTS": "row_id subject_id hadm_id icustay_id itemid charttime storetime cgid value valueuom warning "
                      "error resultstatus stopped",
    "MICROBIOLOGYEVENTS": "row_id subject_id hadm_id chartdate charttime spec_itemid spec_type_desc org_itemid "
                          "org_name isolate_num ab_itemid ab_name dilution_text dilution_comparison dilution_value "
                          "interpretation",
    "PRESCRIPTIONS": "row_id subject_id hadm_id icustay_id startdate enddate drug_type drug drug_name_poe "
                     "drug_name_generic formulary_drug_cd gsn ndc prod_strength dose_val_rx dose_unit_rx "
                     "form_val_disp form_unit_disp route",
    "TRANSFERS": "row_id subject_id hadm_id icustay_id dbsource eventtype prev_careunit curr_careunit prev_wardid "
                 "curr_wardid intime outtime los",
    "SERVICES": "row_id subject_id hadm_id transfertime prev_service curr_service",
    "CALLOUT": "row_id subject_id hadm_id submit_wardid submit_careunit curr_wardid curr_careunit callout_wardid "
               "callout_service request_tele request_resp request_cdiff request_mrsa request_vre callout_status "
               "callout_outcome discharge_wardid acknowledge_status createtime updatetime acknowledgetime "
               "outcometime firstreservationtime currentreservationtime",
    "CPTEVENTS": "row_id subject_id hadm_id costcenter chartdate cpt_cd cpt_number cpt_suffix ticket_id_seq "
                 "sectionheader subsectionheader description",
    "DRGCODES": "row_id subject_id hadm_id drg_type drg_code description drg_severity drg_mortality",
    "NOTEEVENTS": "row_id subject_id hadm_id chartdate charttime storetime category description cgid iserror text",
    "CAREGIVERS": "row_id cgid label description",
    "D_CPT": "row_id category sectionrange sectionheader subsectionrange subsectionheader codesuffix "
             "mincodeinsubsection maxcodeinsubsection",
}
_INT_COLUMNS = {"row_id", "subject_id", "hadm_id", "icustay_id", "itemid", "cgid", "orderid", "linkorderid",
                "spec_itemid", "org_itemid", "isolate_num", "ab_itemid", "prev_wardid", "curr_wardid",
                "submit_wardid", "callout_wardid", "discharge_wardid", "request_tele", "request_resp",
                "request_cdiff", "request_mrsa", "request_vre", "cpt_number", "ticket_id_seq", "drg_severity",
                "drg_mortality", "iserror", "newbottle", "warning", "error", "isopenbag", "continueinnextdept",
                "cancelreason", "mincodeinsubsection", "maxcodeinsubsection"}
_FLOAT_COLUMNS = {"amount", "rate", "originalamount", "originalrate", "patientweight", "totalamount", "los",
                  "dilution_value"}


def _kind(column: str) -> str:
    if column in _INT_COLUMNS:
        return INT
    if column in _FLOAT_COLUMNS:
        return FLOAT
    if column.endswith(("time", "date")) or column == "comments_date":
        return TS
    return STR


MIMIC_SCHEMAS.update({table: tuple((c, _kind(c)) for c in columns.split())
                      for table, columns in _OTHER_TABLE_COLUMNS.items()})
for _table in ("OUTPUTEVENTS", "PROCEDUREEVENTS_MV"):  # their `value` is a number, unlike CHARTEVENTS'
    MIMIC_SCHEMAS[_table] = tuple((c, FLOAT if c == "value" else k) for c, k in MIMIC_SCHEMAS[_table])
HEADER_ONLY_TABLES = tuple(_OTHER_TABLE_COLUMNS)
MIMIC_TABLES = tuple(MIMIC_SCHEMAS)  # the 26 tables of MIMIC-III v1.4


def table_columns(table: str) -> list[str]:
    """Lowercase column names of a MIMIC table, in the official order."""
    return [name for name, _ in MIMIC_SCHEMAS[table]]


def table_filename(table: str, compress: bool) -> str:
    return f"{table}.csv.gz" if compress else f"{table}.csv"



# ---------------------------------------------------------------------------------------------
# CSV writing
# ---------------------------------------------------------------------------------------------

_NEEDS_QUOTE = r'[",\r\n]'


def _quote_strings(arr: pa.Array, quote_all: bool) -> pa.Array:
    """CSV-quote a string array: every value (full release) or only where needed (demo)."""
    if isinstance(arr.type, pa.DictionaryType):
        # quote the (small) dictionary once, then expand
        return pc.take(_quote_strings(arr.dictionary, quote_all), arr.indices)
    if len(arr) == 0:
        return arr
    has_quote = pc.any(pc.match_substring(arr, '"')).as_py()
    escaped = pc.replace_substring(arr, '"', '""') if has_quote else arr
    quoted = pc.binary_join_element_wise('"', escaped, '"', "")
    if quote_all:
        return quoted
    needs = pc.match_substring_regex(arr, _NEEDS_QUOTE)
    if not pc.any(needs).as_py():
        return arr
    return pc.if_else(needs, quoted, arr)


def _csv_lines(columns: list[pa.Array], kinds: list[str], quote_all: bool) -> pa.Array:
    """One CSV line (with trailing newline) per row, nulls as empty fields (pure arrow)."""
    formatted = [_quote_strings(a, quote_all) if k == STR else pc.cast(a, pa.string())
                 for a, k in zip(columns, kinds)]
    joined = pc.binary_join_element_wise(
        *formatted, ",", null_handling="replace", null_replacement=""
    )
    return pc.binary_join_element_wise(joined, "", "\n")


def _string_array_bytes(arr: pa.Array) -> memoryview:
    """The contiguous UTF-8 payload of a string array without nulls (zero copy)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)
    start, end = int(offsets[arr.offset]), int(offsets[arr.offset + len(arr)])
    return memoryview(arr.buffers()[2])[start:end]


def csv_body(columns: list[pa.Array], kinds: list[str], quote_all: bool) -> memoryview:
    """CSV rows (no header) as bytes: the full release style quotes every string value, the
    demo style only values holding a quote, comma or line break."""
    return _string_array_bytes(_csv_lines(columns, kinds, quote_all))


def header_line(table: str, header_case: str) -> bytes:
    if header_case not in ("lower", "upper"):
        raise ValueError(f"header_case must be 'lower' or 'upper', got {header_case!r}")
    names = table_columns(table)
    if header_case == "upper":
        return (",".join(f'"{n.upper()}"' for n in names) + "\n").encode()
    return (",".join(names) + "\n").encode()


def _to_arrow_column(values, kind: str, table: str, column: str) -> pa.Array:
    """Coerce numpy / pandas / arrow values to the arrow type a column kind is written from."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    try:
        if isinstance(values, pa.Array):
            arr = values
        elif kind == TS and isinstance(values, pd.Series) and not pd.api.types.is_datetime64_any_dtype(values):
            arr = pa.array(pd.to_datetime(values), from_pandas=True)
        else:
            arr = pa.array(values, from_pandas=True)
    except (TypeError, ValueError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"{table}.{column}: cannot convert the values for a {kind} column ({exc})") from exc
    t = arr.type
    ok = {
        INT: pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t),
        FLOAT: pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t),
        TS: pa.types.is_timestamp(t) or pa.types.is_integer(t) or pa.types.is_null(t),
        STR: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)
        or (pa.types.is_dictionary(t) and pa.types.is_string(t.value_type)),
    }[kind]
    if not ok:
        hint = " (codes must stay strings to keep leading zeros)" if kind == STR else ""
        raise ValueError(f"{table}.{column}: expected a {kind} column, got arrow type {t}{hint}")
    try:
        if kind == INT:
            if pa.types.is_floating(t):
                arr = pc.round(arr)
            return pc.cast(arr, pa.int64())
        if kind == FLOAT:
            return pc.cast(arr, pa.float64())
        if kind == TS:
            if pa.types.is_integer(t):  # epoch seconds
                return pc.cast(pc.cast(arr, pa.int64()), pa.timestamp("s"))
            if pa.types.is_timestamp(t) and t.unit != "s":
                arr = pc.floor_temporal(arr, unit="second")
                arr = pc.cast(arr, pa.timestamp("s", tz=t.tz), safe=False)
            return pc.cast(arr, pa.timestamp("s"))
        if pa.types.is_dictionary(t):
            return arr
        return pc.cast(arr, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"{table}.{column}: cannot write arrow type {t} as a {kind} column ({exc})") from exc


_WRITE_SLICE_ROWS = 250_000  # bounds the formatted text held per step (and keeps int32 offsets safe)


class MimicTableWriter:
    """Streams one MIMIC table to `path` (CSV or gzip CSV), chunk by chunk.

    Formatting and compression run in two worker threads (arrow and zlib free the GIL), so
    the caller generates chunk k+1 while chunk k is formatted and chunk k-1 compressed. At
    most one chunk waits at each stage, which keeps memory bounded. Output is deterministic:
    the gzip header carries no timestamp or file name.
    """

    def __init__(self, path: Path, table: str, *, header_case: str = "lower",
                 compress: bool = True, gzip_level: int = 1):
        if table not in MIMIC_SCHEMAS:
            raise ValueError(f"unknown MIMIC table {table!r}; expected one of {MIMIC_TABLES}")
        self.path = Path(path)
        self.table = table
        self.columns = MIMIC_SCHEMAS[table]
        self.quote_all = header_case == "upper"
        self.rows = 0
        self._file = open(self.path, "wb")
        self._zip = zlib.compressobj(gzip_level, zlib.DEFLATED, 31) if compress else None
        self._formatter = ThreadPoolExecutor(max_workers=1)
        self._sinker = ThreadPoolExecutor(max_workers=1)
        self._formatting: Future | None = None
        self._sinking: Future | None = None
        self._queue_sink(header_line(table, header_case))

    def _sink(self, payload) -> None:
        self._file.write(self._zip.compress(payload) if self._zip else payload)

    def _queue_sink(self, payload) -> None:
        if self._sinking is not None:
            self._sinking.result()
        self._sinking = self._sinker.submit(self._sink, payload)

    def _format_and_sink(self, arrays: list[pa.Array]) -> None:
        # the memoryview keeps the arrow buffer alive until the sink has consumed it
        self._queue_sink(csv_body(arrays, [k for _, k in self.columns], self.quote_all))

    def write(self, data: Mapping | pd.DataFrame | pa.Table) -> int:
        """Append rows; `data` maps every column name to an array of equal length."""
        names = [name for name, _ in self.columns]
        if isinstance(data, pa.Table):
            data = {name: data.column(name) for name in data.column_names}
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"{self.table}: missing column(s) {missing}; expected {names}")
        arrays = [_to_arrow_column(data[name], kind, self.table, name) for name, kind in self.columns]
        lengths = {len(a) for a in arrays}
        if len(lengths) > 1:
            raise ValueError(f"{self.table}: columns have different lengths {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        if n == 0:
            return 0
        for start in range(0, n, _WRITE_SLICE_ROWS):
            piece = [a.slice(start, _WRITE_SLICE_ROWS) for a in arrays]
            if self._formatting is not None:
                self._formatting.result()
            self._formatting = self._formatter.submit(self._format_and_sink, piece)
        self.rows += n
        return n

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            if self._formatting is not None:
                self._formatting.result()  # it queues the last sink, so wait for it first
            if self._sinking is not None:
                self._sinking.result()
            if self._zip is not None:
                self._file.write(self._zip.flush())
        finally:
            self._formatter.shutdown(wait=True)
            self._sinker.shutdown(wait=True)
            self._file.close()

    def __enter__(self) -> "MimicTableWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def atomic_table_dir(out_dir: Path, compress: bool) -> Iterator[Path]:
    """Yield a private temp dir; on success move its files into `out_dir`, else delete it.

    A failed write leaves `out_dir` as it was. When a table is replaced, the other
    compression variant of it (TABLE.csv vs TABLE.csv.gz) is removed so a directory never
    holds two versions of one table.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=out_dir))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for produced in sorted(tmp.iterdir()):
        table = produced.name.split(".", 1)[0]
        other = out_dir / table_filename(table, not compress)
        if other.exists():
            other.unlink()
        os.replace(produced, out_dir / produced.name)
    tmp.rmdir()


def write_frame(path: Path, table: str, frame: pd.DataFrame | Mapping, *, header_case: str = "lower",
                compress: bool = True) -> int:
    """Write one whole table in one go; returns the row count."""
    with MimicTableWriter(path, table, header_case=header_case, compress=compress) as writer:
        return writer.write(frame)




def write_mimic_tables(tables: Mapping[str, pd.DataFrame], out_dir: str | Path, header_case: str = "lower",
                       compress: bool = True) -> dict[str, Path]:
    """Write MIMIC tables as TABLE.csv(.gz); all files appear at once or none (temp dir + rename).

    Every frame must have exactly the table's MIMIC-III v1.4 columns, in the official order.
    """
    if header_case not in ("lower", "upper"):
        raise ValueError(f"header_case must be 'lower' or 'upper', got {header_case!r}")
    for table, frame in tables.items():
        if table not in MIMIC_SCHEMAS:
            raise ValueError(f"unknown MIMIC table {table!r}; expected one of {sorted(MIMIC_SCHEMAS)}")
        expected = table_columns(table)
        if list(frame.columns) != expected:
            raise ValueError(f"table {table}: columns {list(frame.columns)} differ from the MIMIC-III "
                             f"v1.4 columns {expected}")
    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    with atomic_table_dir(out_dir, compress) as tmp:
        for table, frame in tables.items():
            name = table_filename(table, compress)
            with MimicTableWriter(tmp / name, table, header_case=header_case, compress=compress) as writer:
                writer.write(frame)
            paths[table] = out_dir / name
    return paths


def dict_array(indices: np.ndarray, dictionary: list[str | None]) -> pa.Array:
    """Strings from small integer codes; a negative code or a None entry is a null."""
    indices = np.asarray(indices)
    null_entries = np.array([d is None for d in dictionary], dtype=bool)
    mask = indices < 0
    if null_entries.any():
        mask = mask | null_entries[np.clip(indices, 0, None)]
    dictionary = ["" if d is None else d for d in dictionary]
    idx = pa.array(np.where(mask, 0, indices).astype(np.int32), mask=mask)
    return pa.DictionaryArray.from_arrays(idx, pa.array(dictionary, type=pa.string()))


