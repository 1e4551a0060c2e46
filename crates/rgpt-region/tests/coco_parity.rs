//! Parity of `rgpt_region`'s COCO geometry with pycocotools, against the
//! fixtures `scripts/fixtures/coco_masks.py` writes into
//! `tests/fixtures/coco_masks/cases.json`. Masks are compared by their
//! compressed COCO counts string, so equality means bit-identical masks;
//! IoUs and boxes are compared as exact f64 values.

use std::path::PathBuf;

use rgpt_region::coco_json::{ann_to_rle, fr_py_objects};
use rgpt_region::error::RegionError;
use rgpt_region::iou::{bbox_iou, box_iou_xyxy, mask_iou, rle_iou};
use rgpt_region::raster::{rasterize, Bitmap};
use rgpt_region::rle::Rle;
use rgpt_region::spec::RegionSpec;
use serde_json::Value;

fn cases() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/coco_masks/cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/fixtures/coco_masks.py",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("cases.json is JSON")
}

fn section<'a>(doc: &'a Value, name: &str) -> &'a [Value] {
    let items = doc[name].as_array().expect("section is a list");
    assert!(!items.is_empty(), "fixture section {name} is empty");
    items
}

/// Floats are stored as Python `repr` strings; Rust's parser rounds them
/// correctly, so they come back bit-exact.
fn f(v: &Value) -> f64 {
    v.as_str()
        .expect("float as string")
        .parse()
        .expect("float repr")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().expect("list").iter().map(f).collect()
}

fn bbox4(v: &Value) -> [f64; 4] {
    floats(v).try_into().expect("4 floats")
}

fn u32_of(v: &Value) -> u32 {
    v.as_u64().expect("integer") as u32
}

fn hw(case: &Value) -> (u32, u32) {
    (u32_of(&case["h"]), u32_of(&case["w"]))
}

fn s(v: &Value) -> &str {
    v.as_str().expect("string")
}

fn from_str(v: &Value, h: u32, w: u32) -> Rle {
    Rle::from_coco_string(s(v), h, w).expect("fixture RLE string decodes")
}

fn check_area_bbox(rle: &Rle, case: &Value, what: &str) {
    assert_eq!(
        rle.area(),
        case["area"].as_u64().expect("area"),
        "{what}: area"
    );
    assert_eq!(rle.to_bbox(), bbox4(&case["bbox"]), "{what}: toBbox");
}

#[test]
fn polygons_match_fr_py_objects_and_merge() {
    let doc = cases();
    let mut spec_ok = 0;
    let mut spec_err = 0;
    for case in section(&doc, "poly") {
        let (h, w) = hw(case);
        let note = s(&case["note"]);
        let polys: Vec<Vec<f64>> = case["polys"]
            .as_array()
            .expect("polys")
            .iter()
            .map(floats)
            .collect();
        let expected_parts = case["parts"].as_array().expect("parts");
        let mut rles = Vec::new();
        for (part, want) in polys.iter().zip(expected_parts) {
            let rle = Rle::from_poly(part, h, w).expect("fixture polygon rasterises");
            assert_eq!(
                rle.to_coco_string(),
                s(want),
                "{note}: part {part:?} on {h}x{w}"
            );
            assert_eq!(rle, from_str(want, h, w), "{note}: frString round trip");
            rles.push(rle);
        }
        let merged = Rle::merge(&rles, false).expect("merge");
        assert_eq!(
            merged.to_coco_string(),
            s(&case["merged"]),
            "{note}: merged"
        );
        check_area_bbox(&merged, case, note);

        // The RegionSpec path must give the same mask or refuse it.
        if polys.iter().all(|p| p.len() >= 6) {
            let spec = RegionSpec::Polygon(polys.clone());
            match spec.to_rle(h, w) {
                Ok(rle) => {
                    assert_eq!(rle.to_coco_string(), s(&case["merged"]), "{note}: spec");
                    spec_ok += 1;
                }
                Err(RegionError::ZeroArea { .. }) | Err(RegionError::OutsideImage { .. }) => {
                    assert_eq!(merged.area(), 0, "{note}: spec refused a non-empty polygon");
                    spec_err += 1;
                }
                Err(e) => panic!("{note}: unexpected {e}"),
            }
        }
    }
    assert!(
        spec_ok > 100 && spec_err >= 4,
        "ok {spec_ok}, refused {spec_err}"
    );
}

#[test]
fn raw_polygons_match_fr_poly() {
    let doc = cases();
    for case in section(&doc, "raw_poly") {
        let (h, w) = hw(case);
        let xy = floats(&case["xy"]);
        let rle = Rle::from_poly(&xy, h, w).expect("raw polygon");
        assert_eq!(rle.to_coco_string(), s(&case["rle"]), "{xy:?} on {h}x{w}");
    }
}

#[test]
fn boxes_match_fr_bbox() {
    let doc = cases();
    for case in section(&doc, "bbox") {
        let (h, w) = hw(case);
        let bb = bbox4(&case["bb"]);
        let rle = Rle::from_bbox(bb, h, w).expect("box");
        assert_eq!(rle.to_coco_string(), s(&case["rle"]), "{bb:?} on {h}x{w}");
        check_area_bbox(&rle, case, &format!("{bb:?}"));
        let spec = RegionSpec::from_coco_bbox(bb);
        match spec.to_rle(h, w) {
            Ok(r) => assert_eq!(r, rle, "{spec}"),
            Err(RegionError::ZeroArea { .. })
            | Err(RegionError::EmptyBox { .. })
            | Err(RegionError::OutsideImage { .. }) => {
                assert_eq!(rle.area(), 0, "{spec} refused but pycocotools has pixels")
            }
            Err(e) => panic!("{spec}: unexpected {e}"),
        }
    }
}

#[test]
fn segmentation_json_matches_fr_py_objects_and_ann_to_rle() {
    let doc = cases();
    for case in section(&doc, "frpyobjects") {
        let (h, w) = hw(case);
        let seg = &case["segmentation"];
        let parts = fr_py_objects(seg, h, w).expect("frPyObjects");
        let got: Vec<String> = parts.iter().map(Rle::to_coco_string).collect();
        let want: Vec<&str> = case["parts"]
            .as_array()
            .expect("parts")
            .iter()
            .map(s)
            .collect();
        assert_eq!(got, want, "{seg}");
        let rle = ann_to_rle(seg, h, w).expect("annToRLE");
        assert_eq!(rle.to_coco_string(), s(&case["rle"]), "{seg}");
    }
}

#[test]
fn uncompressed_rles_match() {
    let doc = cases();
    for case in section(&doc, "uncompressed")
        .iter()
        .chain(section(&doc, "big_counts"))
    {
        let (h, w) = hw(case);
        let counts: Vec<u32> = case["counts"]
            .as_array()
            .expect("counts")
            .iter()
            .map(u32_of)
            .collect();
        let rle = Rle::from_uncompressed(h, w, counts.clone()).expect("uncompressed");
        let want = s(&case["rle"]);
        assert_eq!(rle.to_coco_string(), want, "{counts:?}");
        assert_eq!(
            from_str(&case["rle"], h, w).counts,
            counts,
            "{want}: frString"
        );
        check_area_bbox(&rle, case, want);

        // Both JSON forms, through serde and through the helper.
        let uncompressed = serde_json::json!({"size": [h, w], "counts": counts});
        let compressed = serde_json::json!({"size": [h, w], "counts": want});
        let a: Rle = serde_json::from_value(uncompressed.clone()).expect("serde uncompressed");
        let b: Rle = serde_json::from_value(compressed.clone()).expect("serde compressed");
        assert_eq!(a, rle);
        assert_eq!(b, rle);
        assert_eq!(
            Rle::from_json_str(&uncompressed.to_string()).expect("json"),
            rle
        );
        assert_eq!(serde_json::to_value(&rle).expect("serialise"), compressed);
        let parts = fr_py_objects(&uncompressed, h, w).expect("frPyObjects dict");
        assert_eq!(parts, vec![rle]);
    }
}

fn unpack_bits(hex: &str, n: usize) -> Vec<u8> {
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    (0..n).map(|i| (bytes[i / 8] >> (7 - i % 8)) & 1).collect()
}

#[test]
fn encode_and_decode_match_random_bitmaps() {
    let doc = cases();
    for case in section(&doc, "encode") {
        let (h, w) = hw(case);
        let data = unpack_bits(s(&case["bits"]), (h * w) as usize);
        let bitmap = Bitmap::new(h, w, data).expect("bitmap");
        let rle = bitmap.to_rle().expect("encode");
        assert_eq!(rle.to_coco_string(), s(&case["rle"]), "{h}x{w}");
        check_area_bbox(&rle, case, "encode");
        let decoded = Bitmap::from_rle(&from_str(&case["rle"], h, w)).expect("decode");
        assert_eq!(decoded, bitmap, "{h}x{w} decode");
        assert_eq!(decoded.area(), rle.area());
    }
}

#[test]
fn merges_match() {
    let doc = cases();
    for case in section(&doc, "merge") {
        let (h, w) = hw(case);
        let rles: Vec<Rle> = case["rles"]
            .as_array()
            .expect("rles")
            .iter()
            .map(|v| from_str(v, h, w))
            .collect();
        let union = Rle::merge(&rles, false).expect("union");
        let inter = Rle::merge(&rles, true).expect("intersection");
        assert_eq!(
            union.to_coco_string(),
            s(&case["union"]),
            "union {}",
            case["rles"]
        );
        assert_eq!(
            inter.to_coco_string(),
            s(&case["intersect"]),
            "intersect {}",
            case["rles"]
        );
    }
}

#[test]
fn rle_iou_matches_including_crowd() {
    let doc = cases();
    let mut pairs = 0;
    for case in section(&doc, "iou_rle") {
        let (h, w) = hw(case);
        let load = |k: &str| -> Vec<Rle> {
            case[k]
                .as_array()
                .expect("rles")
                .iter()
                .map(|v| from_str(v, h, w))
                .collect()
        };
        let (dt, gt) = (load("dt"), load("gt"));
        let crowd: Vec<bool> = case["iscrowd"]
            .as_array()
            .expect("crowd")
            .iter()
            .map(|v| v.as_u64() == Some(1))
            .collect();
        let got = rle_iou(&dt, &gt, &crowd).expect("iou");
        let want: Vec<Vec<f64>> = case["iou"]
            .as_array()
            .expect("iou")
            .iter()
            .map(floats)
            .collect();
        assert_eq!(got, want, "{case}");
        for (d, row) in dt.iter().zip(&want) {
            for ((g, &c), &v) in gt.iter().zip(&crowd).zip(row) {
                assert_eq!(mask_iou(d, g, c).expect("pair"), v);
                pairs += 1;
            }
        }
    }
    assert!(pairs > 100, "{pairs} pairs");
}

#[test]
fn bbox_iou_matches_including_crowd() {
    let doc = cases();
    for case in section(&doc, "iou_bbox") {
        let load = |k: &str| -> Vec<[f64; 4]> {
            case[k]
                .as_array()
                .expect("boxes")
                .iter()
                .map(bbox4)
                .collect()
        };
        let (dt, gt) = (load("dt"), load("gt"));
        let crowd: Vec<bool> = case["iscrowd"]
            .as_array()
            .expect("crowd")
            .iter()
            .map(|v| v.as_u64() == Some(1))
            .collect();
        let want: Vec<Vec<f64>> = case["iou"]
            .as_array()
            .expect("iou")
            .iter()
            .map(floats)
            .collect();
        assert_eq!(bbox_iou(&dt, &gt, &crowd).expect("iou"), want, "{case}");
    }
}

#[test]
fn xyxy_box_iou() {
    assert_eq!(
        box_iou_xyxy([0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]),
        1.0 / 7.0
    );
    assert_eq!(
        box_iou_xyxy([0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]),
        1.0
    );
    assert_eq!(
        box_iou_xyxy([0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 2.0, 1.0]),
        0.0
    );
    assert_eq!(
        box_iou_xyxy([0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]),
        0.0
    );
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// Reference for the property test: pycocotools sets a pixel when its centre
/// (x+0.5, y+0.5) is inside the polygon (the fixtures above pin down the
/// exact rule). Vertices snap to a 1/5-pixel grid there, so only pixels whose
/// centre is at least `MARGIN` from every edge of a convex polygon are
/// checked: those must be set when inside and clear when outside.
const MARGIN: f64 = 0.3;

#[test]
fn random_convex_polygons_cover_inside_pixel_centres() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut checked = 0u64;
    for _ in 0..300 {
        let h = 1 + (rng.next() % 40) as u32;
        let w = 1 + (rng.next() % 40) as u32;
        let k = 3 + (rng.next() % 9) as usize;
        let cx = rng.uniform(-0.2, 1.2) * f64::from(w);
        let cy = rng.uniform(-0.2, 1.2) * f64::from(h);
        let r = rng.uniform(0.5, 0.8 * f64::from(h.max(w)));
        let mut angles: Vec<f64> = (0..k)
            .map(|_| rng.uniform(0.0, std::f64::consts::TAU))
            .collect();
        angles.sort_by(f64::total_cmp);
        let pts: Vec<(f64, f64)> = angles
            .iter()
            .map(|a| (cx + r * a.cos(), cy + r * a.sin()))
            .collect();
        let xy: Vec<f64> = pts.iter().flat_map(|&(x, y)| [x, y]).collect();
        let rle = Rle::from_poly(&xy, h, w).expect("random polygon");
        let bitmap = Bitmap::from_rle(&rle).expect("decode");
        assert_eq!(bitmap.area(), rle.area());
        // Orientation (shoelace): the sign an inside point's edge cross
        // products all share.
        let sign = (0..k)
            .map(|i| {
                let ((ax, ay), (bx, by)) = (pts[i], pts[(i + 1) % k]);
                ax * by - bx * ay
            })
            .sum::<f64>()
            .signum();
        for py in 0..h {
            for px in 0..w {
                let (qx, qy) = (f64::from(px) + 0.5, f64::from(py) + 0.5);
                // Signed distance to each edge, positive on the inner side.
                let mut min_d = f64::INFINITY;
                for i in 0..k {
                    let (ax, ay) = pts[i];
                    let (bx, by) = pts[(i + 1) % k];
                    let len = ((bx - ax).powi(2) + (by - ay).powi(2)).sqrt();
                    if len < 1e-9 {
                        continue;
                    }
                    let d = ((bx - ax) * (qy - ay) - (by - ay) * (qx - ax)) / len;
                    min_d = min_d.min(d * sign);
                }
                // All angles sorted => convex; `min_d > 0` means inside.
                if min_d.abs() < MARGIN || !min_d.is_finite() {
                    continue;
                }
                let inside = min_d > 0.0;
                assert_eq!(
                    bitmap.get(px, py),
                    Some(inside),
                    "pixel ({px},{py}) of {h}x{w}, polygon {xy:?}, edge distance {min_d}"
                );
                checked += 1;
            }
        }
        // Consistency of the other views of the same mask.
        let bb = rle.to_bbox();
        if rle.area() > 0 {
            let set: Vec<(u32, u32)> = (0..h)
                .flat_map(|y| (0..w).map(move |x| (x, y)))
                .filter(|&(x, y)| bitmap.get(x, y) == Some(true))
                .collect();
            let min_x = set.iter().map(|p| p.0).min().unwrap_or(0);
            let min_y = set.iter().map(|p| p.1).min().unwrap_or(0);
            assert!(bb[0] <= f64::from(min_x) && bb[1] <= f64::from(min_y));
            let spec = RegionSpec::Polygon(vec![xy.clone()]);
            if let Ok(b) = rasterize(&spec, h, w) {
                assert_eq!(b, bitmap);
            }
        }
    }
    assert!(checked > 10_000, "only {checked} pixels checked");
}
