"""The log importer: generic CSV/Parquet with a mapping, every bad-input case, the real datasets."""

import json
import pathlib

import pandas as pd
import pytest

from shoprec import features as F
from shoprec.data import canonical, importer
from shoprec.data.import_report import REPORT_FILE
from shoprec.data.importer import UNKNOWN, ImportDataError, MappingError
from tests.conftest import requirement_mark

REPO = pathlib.Path(__file__).resolve().parents[2]
DATASETS = (REPO / ".." / "shared" / "datasets").resolve()
REES46 = DATASETS / "rees46-sample" / "events.csv"
AMAZON = DATASETS / "amazon-beauty"
needs_rees46 = requirement_mark(REES46.is_file(), f"the REES46 sample dataset at {REES46}",
                                "put ../shared/datasets in place")
needs_amazon = requirement_mark((AMAZON / importer.AMAZON_SEQUENCES_FILE).is_file(),
                                f"the Amazon Beauty dataset at {AMAZON}", "put ../shared/datasets in place")


def write(path: pathlib.Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def read_file(out: pathlib.Path, name: str) -> str:
    return (out / name).read_text()


def read_frames(out: pathlib.Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return tuple(pd.read_csv(out / name, dtype=str, keep_default_na=False)
                 for name in (F.EVENTS_FILE, F.ITEMS_FILE, F.USERS_FILE))


def assert_pipeline_accepts(out: pathlib.Path) -> None:
    """The pipeline's own checks pass on every line; ids are unique and references resolve."""
    canonical.check_data_dir(str(out))
    for name in F.CANONICAL_FILES:
        positions = canonical.read_header(str(out / name))
        with open(out / name) as canonical_file:
            next(canonical_file)
            for line in canonical_file:
                canonical.parse_row(line.rstrip("\n"), positions, name)
    events, items, users = read_frames(out)
    assert events[F.EVENT_ID].is_unique and items[F.ITEM_ID].is_unique
    assert users[F.USER_ID].is_unique
    assert set(events[F.ITEM_ID]) <= set(items[F.ITEM_ID])
    assert set(events[F.USER_ID]) <= set(users[F.USER_ID])
    assert events[F.TIMESTAMP].astype(int).is_monotonic_increasing
    assert set(events[F.EVENT_TYPE]) <= set(F.EVENT_TYPES)
    assert (items[F.PRICE].astype(float) > 0).all()
    assert (events.groupby(F.SESSION_ID)[F.USER_ID].nunique() == 1).all()


# ---------------------------------------------------------------------------------------------
# Generic CSV and Parquet with a mapping.
# ---------------------------------------------------------------------------------------------
EXPORT_CSV = """\
when,visitor,sku,action,cat,maker,unit_price,age
2024-01-01T10:00:00Z,v1,A,view,shoes,acme,10.0,25-34
2024-01-01T10:05:00Z,v1,A,add_to_cart,shoes,acme,10.0,25-34
2024-01-01T09:00:00Z,v2,B,view,,,5.5,21-24
2024-01-01T10:40:00Z,v1,B,transaction,hats,,5.5,25-34
2024-01-01T10:41:00Z,v2,A,remove_from_cart,shoes,acme,10.0,
"""
EXPORT_MAPPING = {
    "columns": {"when": F.TIMESTAMP, "visitor": F.USER_ID, "sku": F.ITEM_ID,
                "action": F.EVENT_TYPE, "cat": F.CATEGORY, "maker": F.BRAND,
                "unit_price": F.PRICE, "age": F.AGE_GROUP},
    "event_types": {"view": F.CLICK, "add_to_cart": F.CART, "transaction": F.PURCHASE,
                    "remove_from_cart": None},
    "age_groups": {"21-24": "18-24"},
    "timestamp": {"format": "iso"},
}


def test_generic_csv_with_mapping_gives_exact_files(tmp_path):
    source = write(tmp_path / "export.csv", EXPORT_CSV)
    report = importer.import_logs("csv", source, str(tmp_path / "out"), EXPORT_MAPPING)

    out = tmp_path / "out"
    # Sorted by time; v1's 35-minute gap starts a new session; remove_from_cart is dropped.
    assert read_file(out, F.EVENTS_FILE) == (
        "event_id,user_id,item_id,event_type,timestamp,session_id\n"
        "e0,v2,B,click,1704099600,s0\n"
        "e1,v1,A,click,1704103200,s1\n"
        "e2,v1,A,cart,1704103500,s1\n"
        "e3,v1,B,purchase,1704105600,s2\n")
    # B's category comes from its other row; no row gives B a brand.
    assert read_file(out, F.ITEMS_FILE) == (
        "item_id,category,brand,price\n"
        f"B,hats,{UNKNOWN},5.5\n"
        "A,shoes,acme,10.0\n")
    assert read_file(out, F.USERS_FILE) == "user_id,age_group\nv2,18-24\nv1,25-34\n"
    assert (report.rows_read, report.events_written, report.rows_ignored) == (5, 4, 1)
    assert report.count("ignored_event_type") == 1
    assert report.count("empty_category") == 1 and report.count("empty_brand") == 2
    assert report.present_fields == {**{f: "present" for f in importer.OPTIONAL_FIELDS},
                                     F.SESSION_ID: "filled"}
    saved = json.loads(read_file(out, REPORT_FILE))
    assert saved["present_fields"] == report.present_fields
    assert saved["problems"]["empty_brand"]["examples"][0]["row"] == 4  # line 4 of the file
    assert_pipeline_accepts(out)


def test_generic_parquet_with_mapping_gives_exact_files(tmp_path):
    source = str(tmp_path / "export.parquet")
    pd.DataFrame({
        "t": pd.to_datetime(["2024-01-01 00:00:10", "2024-01-01 00:00:05",
                             "2024-01-01 01:00:00"]),  # naive, in Berlin time
        "u": [1, 2, 1], "i": [10, 20, 10], "kind": ["buy", "view", "view"],
        "p": [3.0, None, 4.0],
    }).to_parquet(source)
    mapping = {"columns": {"t": F.TIMESTAMP, "u": F.USER_ID, "i": F.ITEM_ID,
                           "kind": F.EVENT_TYPE, "p": F.PRICE},
               "event_types": {"view": F.CLICK, "buy": F.PURCHASE},
               "timestamp": {"timezone": "Europe/Berlin"}}
    report = importer.import_logs("parquet", source, str(tmp_path / "out"), mapping)

    out = tmp_path / "out"
    assert read_file(out, F.EVENTS_FILE) == (
        "event_id,user_id,item_id,event_type,timestamp,session_id\n"
        "e0,2,20,click,1704063605,s0\n"
        "e1,1,10,purchase,1704063610,s1\n"
        "e2,1,10,click,1704067200,s2\n")
    # Item 10: prices 3.0 and 4.0 once each -> the latest, 4.0. Item 20 has none -> the median.
    assert read_file(out, F.ITEMS_FILE) == (
        "item_id,category,brand,price\n"
        f"20,{UNKNOWN},{UNKNOWN},4.0\n"
        f"10,{UNKNOWN},{UNKNOWN},4.0\n")
    assert read_file(out, F.USERS_FILE) == f"user_id,age_group\n2,{UNKNOWN}\n1,{UNKNOWN}\n"
    assert report.location_word == "row"
    assert report.count("conflicting_item_price") == 1
    assert report.problems["conflicting_item_price"].examples[0]["chosen"] == 4.0
    assert report.count("empty_price") == 1 and report.count("item_without_price") == 1
    assert report.present_fields == {
        F.CATEGORY: "filled", F.BRAND: "filled", F.PRICE: "present", F.EVENT_TYPE: "present",
        F.SESSION_ID: "filled", F.AGE_GROUP: "filled"}
    assert_pipeline_accepts(out)


def test_missing_optional_fields_get_defaults_and_show_in_present_fields(tmp_path):
    source = write(tmp_path / "log.csv", "user_id,item_id,timestamp\nu1,i1,100\nu1,i2,5000\n")
    report = importer.import_logs("csv", source, str(tmp_path / "out"))

    out = tmp_path / "out"
    assert read_file(out, F.EVENTS_FILE) == (
        "event_id,user_id,item_id,event_type,timestamp,session_id\n"
        f"e0,u1,i1,{importer.DEFAULT_EVENT_TYPE},100,s0\n"
        f"e1,u1,i2,{importer.DEFAULT_EVENT_TYPE},5000,s1\n")
    assert read_file(out, F.ITEMS_FILE) == (
        "item_id,category,brand,price\n"
        f"i1,{UNKNOWN},{UNKNOWN},{importer.PRICE_PLACEHOLDER}\n"
        f"i2,{UNKNOWN},{UNKNOWN},{importer.PRICE_PLACEHOLDER}\n")
    assert read_file(out, F.USERS_FILE) == f"user_id,age_group\nu1,{UNKNOWN}\n"
    assert report.present_fields == {field: "filled" for field in importer.OPTIONAL_FIELDS}
    assert report.count("optional_field_absent") == len(importer.OPTIONAL_FIELDS)
    saved = json.loads(read_file(out, REPORT_FILE))
    assert saved["present_fields"] == report.present_fields
    assert_pipeline_accepts(out)


def test_mapped_column_absent_from_the_file_is_reported(tmp_path):
    source = write(tmp_path / "log.csv", "uid,iid,ts\nu1,i1,100\n")
    mapping = {"columns": {"uid": F.USER_ID, "iid": F.ITEM_ID, "ts": F.TIMESTAMP,
                           "maker": F.BRAND}}
    report = importer.import_logs("csv", source, str(tmp_path / "out"), mapping)
    assert report.count("missing_optional_column") == 1
    assert report.problems["missing_optional_column"].examples[0]["column"] == "maker"
    assert report.present_fields[F.BRAND] == "filled"
    with pytest.raises(ImportDataError, match=r"field 'brand' \(column 'maker'\)"):
        importer.import_logs("csv", source, str(tmp_path / "strict"), mapping, strict=True)


# ---------------------------------------------------------------------------------------------
# Bad input: counted and reported, or refused with --strict naming file, row and field.
# ---------------------------------------------------------------------------------------------
BASE_CSV = "user_id,item_id,timestamp,event_type,price,category\nu1,i1,100,click,5,c1\n" \
           "u2,i2,200,click,6,c2\n"

BAD_LINES = [  # the appended line 4, the kind found, the field named, whether the row is lost
    ("u3,i3,300,like,7,c3", "unknown_event_type", F.EVENT_TYPE, True),
    ("u3,i3,yesterday,click,7,c3", "unparsable_timestamp", F.TIMESTAMP, True),
    ("u3,i3,-5,click,7,c3", "negative_timestamp", F.TIMESTAMP, True),
    ("u3,i3,300,click,-1,c3", "non_positive_price", F.PRICE, False),
    ("u3,i3,300,click,cheap,c3", "unparsable_price", F.PRICE, False),
    ("u3,i3,300,click", "malformed_row", None, True),
    ("u3,,300,click,7,c3", "missing_required_value", F.ITEM_ID, True),
    ('"u,3",i3,300,click,7,c3', "invalid_id", F.USER_ID, True),
    ("u3,i1,300,click,9,c1", "conflicting_item_price", F.PRICE, False),  # i1 had price 5
]


@pytest.mark.parametrize("line,kind,field,refused", BAD_LINES, ids=[c[1] for c in BAD_LINES])
def test_bad_input_is_counted_with_where_it_is(tmp_path, line, kind, field, refused):
    source = write(tmp_path / "log.csv", BASE_CSV + line + "\n")
    report = importer.import_logs("csv", source, str(tmp_path / "out"))

    assert report.count(kind) == 1
    example = report.problems[kind].examples[0]
    assert 4 in ([example.get("row")] + example.get("rows", []))
    assert example.get("field") == field
    assert report.rows_read == 3
    assert report.rows_refused == int(refused)
    assert report.events_written == 3 - int(refused)
    saved = json.loads(read_file(tmp_path / "out", REPORT_FILE))
    assert saved["problems"][kind]["count"] == 1
    assert_pipeline_accepts(tmp_path / "out")


@pytest.mark.parametrize("line,kind,field,refused", BAD_LINES, ids=[c[1] for c in BAD_LINES])
def test_strict_refuses_bad_input_naming_file_row_and_field(tmp_path, line, kind, field,
                                                            refused):
    source = write(tmp_path / "log.csv", BASE_CSV + line + "\n")
    with pytest.raises(ImportDataError) as error:
        importer.import_logs("csv", source, str(tmp_path / "out"), strict=True)
    message = str(error.value)
    assert source in message and "line 4" in message
    if field is not None:
        assert f"field {field!r}" in message
    assert not (tmp_path / "out").exists()  # nothing written


def test_missing_required_column_is_always_an_error(tmp_path):
    source = write(tmp_path / "log.csv", "user_id,item_id,when\nu1,i1,100\n")
    with pytest.raises(ImportDataError, match=r"log.csv: missing required column\(s\) timestamp"):
        importer.import_logs("csv", source, str(tmp_path / "out"))
    mapping = {"columns": {"user_id": F.USER_ID, "item_id": F.ITEM_ID, "ts": F.TIMESTAMP}}
    with pytest.raises(ImportDataError, match=r"timestamp \(column 'ts'\)"):
        importer.import_logs("csv", source, str(tmp_path / "out"), mapping)


def test_conflicting_item_attributes_most_frequent_then_latest(tmp_path):
    source = write(tmp_path / "log.csv", "user_id,item_id,timestamp,price,brand\n"
                   "u1,i1,300,12,b2\n"   # latest, but 10 is more frequent
                   "u1,i1,100,10,b1\n"
                   "u2,i1,200,10,b1\n"
                   "u1,i2,100,10,x\n"
                   "u2,i2,200,12,y\n")  # a tie: the latest row wins
    report = importer.import_logs("csv", source, str(tmp_path / "out"))
    _, items, _ = read_frames(tmp_path / "out")
    assert items.set_index(F.ITEM_ID)[F.PRICE].to_dict() == {"i1": "10.0", "i2": "12.0"}
    assert items.set_index(F.ITEM_ID)[F.BRAND].to_dict() == {"i1": "b1", "i2": "y"}
    assert report.count("conflicting_item_price") == 2
    assert report.count("conflicting_item_brand") == 2
    assert report.problems["conflicting_item_price"].details["rows_discarded"] == 2


def test_duplicate_event_ids_keep_the_first(tmp_path):
    source = write(tmp_path / "log.csv", "event_id,user_id,item_id,timestamp\n"
                   "x1,u1,i1,100\nx1,u2,i2,50\nx2,u1,i2,200\n")
    report = importer.import_logs("csv", source, str(tmp_path / "out"))
    events, _, _ = read_frames(tmp_path / "out")
    assert list(events[F.EVENT_ID]) == ["x1", "x2"]
    assert list(events[F.USER_ID]) == ["u1", "u1"]
    assert report.count("duplicate_event_id") == 1
    assert report.problems["duplicate_event_id"].examples[0]["row"] == 3


def test_sessions_shared_or_empty_are_fixed(tmp_path):
    source = write(tmp_path / "log.csv", "user_id,item_id,timestamp,session_id\n"
                   "u1,i1,0,s\nu2,i1,10,s\nu1,i1,20,\nu1,i1,3000,\n")
    report = importer.import_logs("csv", source, str(tmp_path / "out"))
    events, _, _ = read_frames(tmp_path / "out")
    assert list(events[F.SESSION_ID]) == ["s:u1", "s:u2", "derived-s0", "derived-s1"]
    assert report.count("session_shared_by_users") == 1
    assert report.count("empty_session") == 2
    assert_pipeline_accepts(tmp_path / "out")


@pytest.mark.parametrize("timestamp,raw,expected", [
    ({"format": "unix"}, "1700000000", 1700000000),
    ({"format": "unix", "unit": "ms"}, "1700000000999", 1700000000),
    ({"format": "unix"}, "1700000000.9", 1700000000),
    ({"format": "%d/%m/%Y %H:%M"}, "14/11/2023 22:13", 1699999980),
    ({"format": "iso"}, "2023-11-14T23:13:20+01:00", 1700000000),
    ({"format": "iso", "timezone": "Europe/Berlin"}, "2023-11-14 23:13:20", 1700000000),
])
def test_timestamp_formats_units_and_zones(tmp_path, timestamp, raw, expected):
    source = write(tmp_path / "log.csv", f"user_id,item_id,timestamp\nu1,i1,{raw}\n")
    importer.import_logs("csv", source, str(tmp_path / "out"), {"timestamp": timestamp})
    events, _, _ = read_frames(tmp_path / "out")
    assert list(events[F.TIMESTAMP]) == [str(expected)]


@pytest.mark.parametrize("mapping,message", [
    ({"colums": {}}, "unknown key"),
    ({"columns": {"a": "product"}}, "not a canonical field"),
    ({"columns": {"a": F.USER_ID, "b": F.USER_ID}}, "both 'a' and 'b'"),
    ({"event_types": {"view": "visit"}}, "not one of"),
    ({"timestamp": {"unit": "minutes"}}, "timestamp takes"),
    ({"columns": {"u": F.USER_ID, "b": F.BRAND}, "optional_fields": [F.PRICE]},
     "optional_fields lists"),
])
def test_malformed_mapping_is_refused(mapping, message):
    with pytest.raises(MappingError, match=message):
        importer.parse_mapping(mapping)


def test_command_line_prints_the_report_and_fails_under_strict(tmp_path, capsys):
    source = write(tmp_path / "log.csv", BASE_CSV + "u3,i3,300,like,7,c3\n")
    out = str(tmp_path / "out")
    assert importer.main(["--source", "csv", "--input", source, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "rows read 3" in printed and "unknown_event_type: 1 rows" in printed
    assert importer.main(["--source", "csv", "--input", source, "--out", out, "--strict"]) == 1
    assert "line 4, field 'event_type'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        importer.main(["--help"])
    assert exit_info.value.code == 0 and "--mapping" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        importer.main(["--source", "rees46", "--input", source, "--out", out, "--mapping",
                       str(REPO / "examples" / "mappings" / "rees46.yaml")])
    assert exit_info.value.code == 2


def test_example_mappings_are_valid_and_rees46_matches_the_adapter():
    mappings = REPO / "examples" / "mappings"
    assert importer.load_mapping(str(mappings / "rees46.yaml")) == importer.REES46_MAPPING
    generic = importer.parse_mapping(importer.load_mapping(str(mappings / "generic.yaml")))
    assert generic.event_types["remove_from_cart"] is None
    assert generic.timestamp_unit == "ms"


# ---------------------------------------------------------------------------------------------
# The benchmark helpers.
# ---------------------------------------------------------------------------------------------
def test_leave_one_out_last_is_test_second_last_is_validation():
    train, valid, test = importer.leave_one_out({"u1": ["a", "b", "c", "d"], "u2": ["x", "y"]})
    assert train == {"u1": ["a", "b"], "u2": ["x", "y"]}
    assert valid == {"u1": "c"} and test == {"u1": "d"}


def test_load_amazon_sequences_refuses_a_user_without_items(tmp_path):
    write(tmp_path / importer.AMAZON_SEQUENCES_FILE, "1 10 11\n2\n")
    with pytest.raises(ImportDataError, match="line 2: user '2' has no items"):
        importer.load_amazon_beauty_sequences(str(tmp_path))


def test_amazon_adapter_on_a_small_file(tmp_path):
    write(tmp_path / importer.AMAZON_SEQUENCES_FILE, "1 10 11 12\n2 11\n\n1 13\n")
    (tmp_path / importer.AMAZON_ATTRIBUTES_FILE).write_text(json.dumps(
        {"10": [7, 1, 2], "11": [1, 3], "12": [8, 1, 2, 4]}))  # 7, 8 brands; 13 has none
    report = importer.import_logs("amazon-beauty", str(tmp_path), str(tmp_path / "out"))
    events, items, _ = read_frames(tmp_path / "out")
    last, step = importer.AMAZON_LAST_TIMESTAMP, importer.AMAZON_STEP_S
    assert list(zip(events[F.USER_ID], events[F.ITEM_ID], events[F.TIMESTAMP].astype(int))) == [
        ("1", "10", last - 2 * step), ("1", "11", last - step), ("1", "12", last),
        ("2", "11", last)]
    assert set(events[F.EVENT_TYPE]) == {importer.AMAZON_EVENT_TYPE}
    assert items.set_index(F.ITEM_ID)[[F.CATEGORY, F.BRAND]].to_dict("index") == {
        "10": {F.CATEGORY: "attr1/attr2", F.BRAND: "attr7"},
        "11": {F.CATEGORY: "attr1/attr3", F.BRAND: UNKNOWN},
        "12": {F.CATEGORY: "attr1/attr2", F.BRAND: "attr8"}}
    assert report.count("duplicate_user") == 1 and report.rows_refused == 1
    assert report.count("blank_line") == 1
    assert_pipeline_accepts(tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# The real datasets (skipped when ../shared/datasets is absent; a failure under CI=true).
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rees46(tmp_path_factory) -> tuple[importer.ImportReport, pathlib.Path]:
    out = tmp_path_factory.mktemp("rees46")
    return importer.import_logs("rees46", str(REES46), str(out)), out


@needs_rees46
def test_rees46_counts_and_mess(rees46):
    report, out = rees46
    events, items, users = read_frames(out)
    assert report.rows_read == report.events_written == len(events) == 17_434
    assert report.rows_refused == report.rows_ignored == 0
    assert events[F.EVENT_TYPE].value_counts().to_dict() == {
        F.CLICK: 17_055, F.PURCHASE: 214, F.CART: 165}
    assert (len(items), len(users)) == (6_493, 4_504)
    assert report.count("empty_brand") / report.rows_read == pytest.approx(0.14, abs=0.005)
    assert report.count("empty_category") / report.rows_read == pytest.approx(0.33, abs=0.005)
    assert (report.count("empty_brand"), report.count("empty_category")) == (2_477, 5_746)
    assert report.problems["empty_category"].details["filled_from_fallback"] == \
        report.count("empty_category")
    assert report.count("non_positive_price") > 0
    assert report.present_fields[F.AGE_GROUP] == "filled"
    assert report.present_fields[F.BRAND] == report.present_fields[F.CATEGORY] == "present"
    assert set(users[F.AGE_GROUP]) == {UNKNOWN}
    assert not items[F.CATEGORY].eq(UNKNOWN).any()  # category_id always fills the gap
    assert items[F.CATEGORY].str.startswith("cat_").any()
    assert_pipeline_accepts(out)


@needs_rees46
def test_rees46_yaml_mapping_gives_the_same_files(rees46, tmp_path):
    _, adapter_out = rees46
    mapping = importer.load_mapping(str(REPO / "examples" / "mappings" / "rees46.yaml"))
    importer.import_logs("csv", str(REES46), str(tmp_path), mapping)
    for name in F.CANONICAL_FILES:
        assert read_file(tmp_path, name) == read_file(adapter_out, name), name


@needs_rees46
def test_rees46_strict_names_the_first_discarded_value(tmp_path):
    with pytest.raises(ImportDataError, match=r"events.csv, line \d+, field 'price'"):
        importer.import_logs("rees46", str(REES46), str(tmp_path), strict=True)


@pytest.fixture(scope="module")
def amazon(tmp_path_factory) -> tuple[importer.ImportReport, pathlib.Path]:
    out = tmp_path_factory.mktemp("amazon")
    return importer.import_logs("amazon-beauty", str(AMAZON), str(out)), out


@needs_amazon
def test_amazon_beauty_counts_order_and_attributes(amazon):
    report, out = amazon
    events, items, users = read_frames(out)
    assert report.rows_read == report.events_written == len(events) == 198_502
    assert (len(users), len(items)) == (22_363, 12_101)
    sequences = importer.load_amazon_beauty_sequences(str(AMAZON))
    assert events.groupby(F.USER_ID)[F.ITEM_ID].agg(list).to_dict() == sequences
    times = events[F.TIMESTAMP].astype(int).groupby(events[F.USER_ID])
    assert times.diff().dropna().gt(0).all()  # strictly increasing per user
    assert times.max().eq(importer.AMAZON_LAST_TIMESTAMP).all()
    assert report.count("empty_brand") == items[F.BRAND].eq(UNKNOWN).sum() > 0
    assert items[F.CATEGORY].str.fullmatch(r"attr\d+(/attr\d+)?").all()
    assert report.present_fields[F.PRICE] == "filled"
    assert report.present_fields[F.CATEGORY] == "present"
    assert_pipeline_accepts(out)


@needs_amazon
def test_amazon_beauty_leave_one_out():
    sequences = importer.load_amazon_beauty_sequences(str(AMAZON / importer.AMAZON_SEQUENCES_FILE))
    train, valid, test = importer.leave_one_out(sequences)
    assert len(sequences) == len(valid) == len(test) == 22_363
    assert sum(map(len, train.values())) == 198_502 - 2 * 22_363
    assert len({item for items in sequences.values() for item in items}) == 12_101
    user = next(iter(sequences))
    assert train[user] + [valid[user], test[user]] == sequences[user]


# ---------------------------------------------------------------------------------------------
# Separate item and user attribute files.
# ---------------------------------------------------------------------------------------------
LOG_CSV = """\
user_id,item_id,timestamp,category,price
u1,A,100,shoes,10.0
u1,B,200,,7.0
u2,A,300,shoes,10.0
"""
ITEMS_CSV = """\
sku,kind,maker,cost
A,boots,acme,12.5
C,hats,hatco,3.0
"""
USERS_CSV = """\
user_id,age_group
u1,25-34
u3,55+
"""
ATTRIBUTE_MAPPING = {"item_columns": {"sku": F.ITEM_ID, "kind": F.CATEGORY, "maker": F.BRAND,
                                      "cost": F.PRICE}}


def _import_with_attributes(tmp_path: pathlib.Path, items: str = ITEMS_CSV, users: str = USERS_CSV,
                            strict: bool = False):
    out = tmp_path / "out"
    report = importer.import_logs(
        "csv", write(tmp_path / "log.csv", LOG_CSV), str(out), ATTRIBUTE_MAPPING, strict=strict,
        items_path=write(tmp_path / "items.csv", items), users_path=write(tmp_path / "users.csv", users))
    return out, report


def test_attribute_files_add_items_and_users_without_events_and_win_over_the_log(tmp_path):
    out, report = _import_with_attributes(tmp_path)
    assert_pipeline_accepts(out)
    _, items, users = read_frames(out)
    assert items.to_dict("records") == [
        {F.ITEM_ID: "A", F.CATEGORY: "boots", F.BRAND: "acme", F.PRICE: "12.5"},  # the file wins
        {F.ITEM_ID: "B", F.CATEGORY: UNKNOWN, F.BRAND: UNKNOWN, F.PRICE: "7.0"},  # the log's row
        {F.ITEM_ID: "C", F.CATEGORY: "hats", F.BRAND: "hatco", F.PRICE: "3.0"},  # no events
    ]
    assert users.to_dict("records") == [{F.USER_ID: "u1", F.AGE_GROUP: "25-34"},
                                        {F.USER_ID: "u2", F.AGE_GROUP: UNKNOWN},
                                        {F.USER_ID: "u3", F.AGE_GROUP: "55+"}]
    assert (report.count("item_without_events"), report.count("user_without_events")) == (1, 1)
    assert (report.count("item_without_attributes"), report.count("user_without_attributes")) == (1, 1)
    overridden = report.problems["attribute_file_overrides_events"]
    assert overridden.count == 2  # A's category and price
    assert {e["field"]: e["values"] for e in overridden.examples} == {
        F.CATEGORY: {"file": "boots", "log": "shoes"}, F.PRICE: {"file": 12.5, "log": 10.0}}
    assert (report.rows_read, report.events_written, report.items_written, report.users_written) == (
        3, 3, 3, 3)
    on_disk = json.loads((out / REPORT_FILE).read_text())["attribute_files"]
    assert on_disk[str(tmp_path / "items.csv")] == {"holds": "items", "location_unit": "line",
                                                     "rows_read": 2, "rows_refused": 0, "rows_kept": 2}


def test_a_bad_attribute_row_is_refused_naming_the_file_and_line(tmp_path):
    items = ITEMS_CSV + 'A,boots,acme,12.5\n"D,x",hats,hatco,1.0\nE,hats,hatco,-2\n'
    out, report = _import_with_attributes(tmp_path, items=items)
    _, frame, _ = read_frames(out)
    assert list(frame[F.ITEM_ID]) == ["A", "B", "C", "E"]  # D refused, E kept without a price
    assert report.problems["duplicate_attribute_row"].examples[0]["row"] == 4
    assert report.problems["invalid_id"].examples[0] == {
        "file": str(tmp_path / "items.csv"), "row": 5, "field": F.ITEM_ID, "column": "sku",
        "value": "D,x"}
    assert report.count("non_positive_price") == 1
    assert report.rows_refused == 0  # the log's rows: none refused
    with pytest.raises(ImportDataError, match=r"items\.csv, line 2, field 'category', id 'A': the "
                                              r"attribute file and the log's rows disagree.*"
                                              r"duplicate_attribute_row: 1 rows refused"):
        _import_with_attributes(tmp_path, items=items, strict=True)


@pytest.mark.parametrize("items, message", [
    ("name,kind\nA,boots\n", r"items\.csv: missing the id column 'sku'"),
    ("sku,kind\nA,boots\n", r"items\.csv: the mapping names column\(s\) the file does not have: "
                            r"brand \(column 'maker'\), price \(column 'cost'\)"),
])
def test_an_attribute_file_without_its_columns_is_an_error(tmp_path, items, message):
    with pytest.raises(ImportDataError, match=message):
        _import_with_attributes(tmp_path, items=items)
    assert not (tmp_path / "out" / F.ITEMS_FILE).exists()


def test_attribute_files_in_parquet_and_on_the_command_line(tmp_path, capsys):
    pd.DataFrame({"user_id": ["u1", "u9"], "age_group": ["25-34", "18-24"]}).to_parquet(
        tmp_path / "users.parquet")
    out = tmp_path / "out"
    status = importer.main(["--source", "csv", "--input", write(tmp_path / "log.csv", LOG_CSV),
                            "--users", str(tmp_path / "users.parquet"), "--out", str(out)])
    assert status == 0
    assert "users file" in capsys.readouterr().out
    _, _, users = read_frames(out)
    assert list(users[F.USER_ID]) == ["u1", "u2", "u9"]
    with pytest.raises(SystemExit):
        importer.main(["--source", "rees46", "--input", "x.csv", "--items", "i.csv", "--out", str(out)])
    assert "--items and --users are for csv and parquet" in capsys.readouterr().err


def test_malformed_attribute_mapping_is_refused():
    with pytest.raises(MappingError, match=r"item_columns: 'x' -> 'age_group': not a canonical field"):
        importer.parse_mapping({"item_columns": {"x": F.AGE_GROUP}})
