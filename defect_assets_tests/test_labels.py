"""Every label format parsed to exact rows; bad rows named by file, row and reason."""

import math

import pytest

from defect_assets.ml.labels import (
    LabelFileError,
    class_order,
    combine_labels,
    is_defect_label,
    labels_from_class_folders,
    parse_labels_csv,
    parse_points_csv,
    parse_voc_xml,
    validate_against_images,
)

VOC = """<annotation>
  <folder>imgs</folder><filename>door_01.jpg</filename>
  <size><width>640</width><height>480</height><depth>3</depth></size>
  <object><name>dent</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>
    <bndbox><xmin>100</xmin><ymin>50</ymin><xmax>140</xmax><ymax>90</ymax></bndbox></object>
  <object><name>scratch</name><bndbox><xmin>300</xmin><ymin>200</ymin><xmax>360</xmax><ymax>210</ymax></bndbox></object>
</annotation>"""


def records(df):
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in df.drop(columns=["source"]).to_dict("records")]


def test_labels_csv_rows():
    df = parse_labels_csv("image,label,extra\na.png,ok,1\nsub/b.png,crack,2\n\n", "labels.csv")
    assert records(df) == [
        dict(image="a.png", kind="image", label="ok",
             x=None, y=None, xmin=None, ymin=None, xmax=None, ymax=None, row=2, group=None),
        dict(image="sub/b.png", kind="image", label="crack",
             x=None, y=None, xmin=None, ymin=None, xmax=None, ymax=None, row=3, group=None),
    ]
    grouped = parse_labels_csv("image,label,group\nc.png,ok,module-7\n", "labels.csv")
    assert grouped["group"].tolist() == ["module-7"]


def test_labels_csv_in_a_subfolder_prefixes_paths():
    df = parse_labels_csv("image,label\nx.png,1.0\n", "part2/labels.csv", folder="part2")
    assert df["image"].tolist() == ["part2/x.png"] and df["source"].tolist() == ["part2/labels.csv"]


def test_points_csv_rows_default_label():
    df = parse_points_csv("image,x,y\np.png,10,20.5\np.png,30,40\n", "points.csv")
    assert [(r["image"], r["kind"], r["label"], r["x"], r["y"], r["row"]) for r in records(df)] == [
        ("p.png", "point", "defect", 10.0, 20.5, 2), ("p.png", "point", "defect", 30.0, 40.0, 3)]
    df2 = parse_points_csv("image,x,y,label\nq.png,1,2,scratch\n", "points.csv")
    assert df2["label"].tolist() == ["scratch"]


def test_voc_xml_boxes():
    df = parse_voc_xml(VOC, "imgs/door_01.xml", folder="imgs")
    assert [(r["image"], r["kind"], r["label"], r["x"], r["y"], r["xmin"], r["ymin"], r["xmax"], r["ymax"])
            for r in records(df)] == [
        ("imgs/door_01.jpg", "box", "dent", 120.0, 70.0, 100.0, 50.0, 140.0, 90.0),
        ("imgs/door_01.jpg", "box", "scratch", 330.0, 205.0, 300.0, 200.0, 360.0, 210.0)]


def test_class_folders():
    df = labels_from_class_folders(["ok/1.png", "crack/2.png", "top.png"])
    assert sorted(zip(df["image"], df["label"])) == [("crack/2.png", "crack"), ("ok/1.png", "ok")]


def test_bad_rows_name_file_row_and_reason_all_at_once():
    text = "image,x,y\na.png,10,20\nb.png,ten,20\n,1,2\nc.png,-4,2\nd.png,1\n"
    with pytest.raises(LabelFileError) as err:
        parse_points_csv(text, "points.csv")
    msgs = [str(p) for p in err.value.problems]
    assert msgs == [
        "points.csv:3: x 'ten' is not a number",
        "points.csv:4: empty image name",
        "points.csv:5: x '-4' must be a finite number >= 0",
        "points.csv:6: 2 fields, header has 3",
    ]
    assert "4 bad label row(s)" in str(err.value)


def test_wrong_header_and_conflicting_labels():
    with pytest.raises(LabelFileError, match=r"labels.csv:1: header .* lacks column\(s\) \['image', 'label'\]"):
        parse_labels_csv("file,class\na.png,ok\n", "labels.csv")
    with pytest.raises(LabelFileError, match=r"labels.csv:3: 'a.png' labeled 'ok' earlier and 'crack' here"):
        parse_labels_csv("image,label\na.png,ok\na.png,crack\n", "labels.csv")


def test_bad_voc():
    with pytest.raises(LabelFileError, match="not well-formed XML"):
        parse_voc_xml("<annotation><filename>a.png</filename>", "a.xml")
    bad_box = VOC.replace("<xmax>140</xmax>", "<xmax>90</xmax>")
    with pytest.raises(LabelFileError, match=r"a.xml:1: <object> #1 \(dent\): empty box"):
        parse_voc_xml(bad_box, "a.xml")


def test_conflict_across_sources_and_validation_against_images():
    a = parse_labels_csv("image,label\nok/1.png,crack\n", "labels.csv")
    b = labels_from_class_folders(["ok/1.png"])
    with pytest.raises(LabelFileError, match="'ok/1.png' labeled"):
        combine_labels([a, b])
    pts = parse_points_csv("image,x,y\nimg.png,10,10\nimg.png,500,10\nghost.png,1,1\nbad.png,1,1\n", "points.csv")
    with pytest.raises(LabelFileError) as err:
        validate_against_images(pts, {"img.png": (100, 80)}, rejected={"bad.png"})
    assert [str(p) for p in err.value.problems] == [
        "points.csv:3: point (500, 10) lies outside 'img.png' (100x80)",
        "points.csv:4: image 'ghost.png' is not in this batch"]
    kept, notes = validate_against_images(pts.iloc[[0, 3]], {"img.png": (100, 80)}, rejected={"bad.png"})
    assert kept["image"].tolist() == ["img.png"]
    assert notes == ["points.csv:5: label of rejected image 'bad.png' ignored"]


def test_binary_mapping_and_class_order():
    assert [is_defect_label(v) for v in ["0.0000", "0.3333", "0.6667", "1.0000"]] == [False, False, True, True]
    assert ([is_defect_label(v) for v in ["ok", "Good", "background", "crack", "dent"]]
            == [False, False, False, True, True])
    assert class_order(["1.0000", "0.3333", "0.0000", "0.6667"]) == ["0.0000", "0.3333", "0.6667", "1.0000"]
    assert class_order(["scratch", "dent", "background"]) == ["background", "dent", "scratch"]
