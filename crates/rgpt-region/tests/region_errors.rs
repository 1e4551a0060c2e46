//! Bad input of every kind must come back as a `RegionError` whose one-line
//! message names the region, never as a panic; plus the spec grammar, mask
//! PNGs and point disks, which have no pycocotools counterpart.

use std::path::PathBuf;

use rgpt_region::coco_json::{ann_to_rle, fr_py_objects};
use rgpt_region::error::RegionError;
use rgpt_region::iou::{bbox_iou, mask_iou, rle_iou};
use rgpt_region::raster::{rasterize, Bitmap};
use rgpt_region::rle::Rle;
use rgpt_region::spec::RegionSpec;
use serde_json::json;

fn one_line(e: &RegionError) -> String {
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "multi-line message: {msg}");
    msg
}

fn spec_err(text: &str) -> RegionError {
    match text.parse::<RegionSpec>() {
        Ok(spec) => panic!("{text:?} parsed as {spec:?}"),
        Err(e) => e,
    }
}

#[test]
fn malformed_spec_strings_are_errors_naming_the_spec() {
    for text in [
        "",
        "box",
        "box:1,2,3",
        "box:1,2,3,4,5",
        "box:a,1,2,3",
        "box:1,,2,3",
        "box:nan,0,1,1",
        "box:1,inf,2,3",
        "circle:1,2",
        "poly:1,2,3,4",
        "poly:1,2,3,4,5,6,7",
        "poly:1,2,3,4,5,6;1,2",
        "poly:",
        "point:1",
        "point:1,2,3,4",
        "rle:{bad",
        "rle:{\"size\":[2,2],\"counts\":[1,2]}",
        "rle:{\"size\":[2,2],\"counts\":\"5\"}",
        "rle:{\"counts\":\"4\"}",
        "mask:",
    ] {
        let e = spec_err(text);
        assert!(matches!(e, RegionError::Spec { .. }), "{text:?}: {e:?}");
        let msg = one_line(&e);
        assert!(
            msg.contains(&format!("{text:?}")),
            "{text:?} not named in: {msg}"
        );
    }
}

#[test]
fn spec_strings_parse_and_print_back() {
    let cases = [
        ("box:1,2,3.5,4", RegionSpec::from_xyxy(1.0, 2.0, 3.5, 4.0)),
        (
            "poly:0,0,4,0,4,4;5,5,6,5,6,6",
            RegionSpec::Polygon(vec![
                vec![0.0, 0.0, 4.0, 0.0, 4.0, 4.0],
                vec![5.0, 5.0, 6.0, 5.0, 6.0, 6.0],
            ]),
        ),
        ("point:3,4", RegionSpec::point(3.0, 4.0)),
        (
            "point:3,4,2.5",
            RegionSpec::Point {
                x: 3.0,
                y: 4.0,
                radius: Some(2.5),
            },
        ),
    ];
    for (text, want) in cases {
        let got: RegionSpec = text.parse().expect("valid spec");
        assert_eq!(got, want, "{text}");
        assert_eq!(got.to_string(), text);
        assert_eq!(
            RegionSpec::parse(&got.to_string()).expect("round trip"),
            want
        );
    }
    // Whitespace around numbers is allowed.
    let spaced: RegionSpec = "poly: 0, 0, 4,0 ,4,4".parse().expect("spaced");
    assert_eq!(
        spaced,
        RegionSpec::Polygon(vec![vec![0.0, 0.0, 4.0, 0.0, 4.0, 4.0]])
    );
    let rle: RegionSpec = r#"rle:{"size":[2,3],"counts":[1,2,3]}"#.parse().expect("rle");
    let RegionSpec::Rle(r) = &rle else {
        panic!("{rle:?}")
    };
    assert_eq!(r.counts, vec![1, 2, 3]);
    assert_eq!(rle.to_string(), r#"rle:{"size":[2,3],"counts":"123"}"#);
    assert_eq!(
        RegionSpec::parse(&rle.to_string()).expect("rle round trip"),
        rle
    );
}

fn to_rle_err(spec: &RegionSpec, h: u32, w: u32) -> RegionError {
    match spec.to_rle(h, w) {
        Ok(r) => panic!("{spec} gave {r:?}"),
        Err(e) => {
            one_line(&e);
            e
        }
    }
}

#[test]
fn regions_without_pixels_are_errors() {
    let zero = RegionSpec::parse("box:3.1,3.1,3.3,3.3").expect("box");
    let e = to_rle_err(&zero, 8, 8);
    assert!(matches!(e, RegionError::ZeroArea { .. }), "{e:?}");
    assert!(e.to_string().contains("box:3.1,3.1,3.3,3.3"), "{e}");

    // A box with no width or height is empty, wherever it is: not
    // "outside the image" (issue 25).
    let flat = RegionSpec::from_coco_bbox([2.0, 2.0, 0.0, 3.0]);
    assert!(matches!(
        to_rle_err(&flat, 8, 8),
        RegionError::EmptyBox { .. }
    ));
    let origin = RegionSpec::parse("box:0,0,0,0").expect("box");
    let e = to_rle_err(&origin, 8, 8);
    assert!(matches!(e, RegionError::EmptyBox { .. }), "{e:?}");
    assert!(
        e.to_string().contains("box:0,0,0,0") && e.to_string().contains("empty"),
        "{e}"
    );

    let sliver = RegionSpec::Polygon(vec![vec![3.1, 3.1, 3.3, 3.1, 3.2, 3.3]]);
    assert!(matches!(
        to_rle_err(&sliver, 8, 8),
        RegionError::ZeroArea { .. }
    ));

    let collinear = RegionSpec::Polygon(vec![vec![1.0, 1.0, 4.0, 4.0, 7.0, 7.0]]);
    assert!(matches!(
        to_rle_err(&collinear, 8, 8),
        RegionError::ZeroArea { .. }
    ));

    let empty_rle = RegionSpec::Rle(Rle::empty(4, 5).expect("empty"));
    assert!(matches!(
        to_rle_err(&empty_rle, 4, 5),
        RegionError::ZeroArea { .. }
    ));

    let empty_mask = RegionSpec::Mask(Bitmap::zeros(4, 5));
    assert!(matches!(
        to_rle_err(&empty_mask, 4, 5),
        RegionError::ZeroArea { .. }
    ));
}

#[test]
fn regions_outside_the_image_are_errors() {
    for text in [
        "box:20,20,30,30",
        "box:-5,-5,0,0",
        "box:8,0,9,4",
        "poly:20,20,30,20,30,30",
        "poly:-10,2,-2,2,-6,6",
        "point:8,3",
        "point:-0.5,3,4",
    ] {
        let spec = RegionSpec::parse(text).expect("valid spec");
        let e = to_rle_err(&spec, 8, 8);
        assert!(
            matches!(e, RegionError::OutsideImage { .. }),
            "{text}: {e:?}"
        );
        assert!(e.to_string().contains(text), "{e}");
    }
}

#[test]
fn malformed_regions_are_errors() {
    let inverted = RegionSpec::from_xyxy(5.0, 1.0, 1.0, 4.0);
    assert!(matches!(
        to_rle_err(&inverted, 8, 8),
        RegionError::InvertedBox { .. }
    ));

    for (parts, bad_part, coords) in [
        (vec![], 0, 0),
        (vec![vec![0.0, 0.0, 1.0, 1.0]], 0, 4),
        (vec![vec![0.0, 0.0, 3.0, 0.0, 3.0, 3.0, 1.0]], 0, 7),
        (
            vec![vec![0.0, 0.0, 3.0, 0.0, 3.0, 3.0], vec![1.0, 1.0]],
            1,
            2,
        ),
    ] {
        let spec = RegionSpec::Polygon(parts);
        match to_rle_err(&spec, 8, 8) {
            RegionError::BadPolygon {
                part, coords: c, ..
            } => {
                assert_eq!((part, c), (bad_part, coords), "{spec}")
            }
            e => panic!("{spec}: {e:?}"),
        }
    }

    for bad in [f64::NAN, f64::INFINITY, 1.0e9, -2.0e6] {
        let poly = RegionSpec::Polygon(vec![vec![0.0, 0.0, 3.0, 0.0, bad, 3.0]]);
        assert!(
            matches!(to_rle_err(&poly, 8, 8), RegionError::BadCoordinate { .. }),
            "{bad}"
        );
        let bx = RegionSpec::from_xyxy(0.0, 0.0, bad, 3.0);
        assert!(
            matches!(to_rle_err(&bx, 8, 8), RegionError::BadCoordinate { .. }),
            "{bad}"
        );
        let pt = RegionSpec::Point {
            x: bad,
            y: 1.0,
            radius: None,
        };
        assert!(
            matches!(to_rle_err(&pt, 8, 8), RegionError::BadCoordinate { .. }),
            "{bad}"
        );
        assert!(matches!(
            Rle::from_poly(&[0.0, 0.0, 3.0, 0.0, bad, 3.0], 8, 8),
            Err(RegionError::BadCoordinate { .. })
        ));
    }

    for radius in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let pt = RegionSpec::Point {
            x: 2.0,
            y: 2.0,
            radius: Some(radius),
        };
        assert!(
            matches!(to_rle_err(&pt, 8, 8), RegionError::BadRadius { .. }),
            "{radius}"
        );
    }

    let bx = RegionSpec::from_xyxy(0.0, 0.0, 2.0, 2.0);
    for (h, w) in [(0, 5), (5, 0), (65_536, 65_536)] {
        assert!(
            matches!(to_rle_err(&bx, h, w), RegionError::ImageSize { .. }),
            "{h}x{w}"
        );
    }
}

#[test]
fn rles_and_masks_of_the_wrong_size_are_errors() {
    let rle = Rle::from_uncompressed(4, 5, vec![3, 4, 13]).expect("rle");
    let spec = RegionSpec::Rle(rle.clone());
    let e = to_rle_err(&spec, 5, 4);
    assert!(
        matches!(
            e,
            RegionError::SizeMismatch {
                got_height: 4,
                got_width: 5,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(spec.to_rle(4, 5).expect("same size"), rle);

    let short = RegionSpec::Rle(Rle {
        height: 4,
        width: 5,
        counts: vec![3, 4],
    });
    assert!(matches!(
        to_rle_err(&short, 4, 5),
        RegionError::RleLength { sum: 7, .. }
    ));

    let mask = Bitmap::from_rle(&rle).expect("decode");
    let e = to_rle_err(&RegionSpec::Mask(mask.clone()), 4, 4);
    assert!(matches!(e, RegionError::SizeMismatch { .. }), "{e:?}");
    assert_eq!(RegionSpec::Mask(mask).to_rle(4, 5).expect("mask"), rle);

    let ragged = Bitmap {
        height: 4,
        width: 5,
        data: vec![1; 7],
    };
    assert!(matches!(
        to_rle_err(&RegionSpec::Mask(ragged), 4, 5),
        RegionError::BitmapLength { .. }
    ));
    assert!(matches!(
        Bitmap::new(2, 2, vec![1; 3]),
        Err(RegionError::BitmapLength { .. })
    ));
    assert!(matches!(
        Rle::encode_col_major(2, 2, &[1; 5]),
        Err(RegionError::BitmapLength { .. })
    ));
    assert!(matches!(
        Bitmap::from_rle(&Rle {
            height: 2,
            width: 2,
            counts: vec![1, 9]
        }),
        Err(RegionError::RleLength { .. })
    ));
}

#[test]
fn malformed_counts_strings_are_errors() {
    for (counts, h, w) in [
        ("5 ", 2, 3), // byte outside '0'..'o'
        ("1é", 2, 3), // non-ASCII
        ("P", 2, 3),  // ends with the continuation bit set
        ("4", 2, 3),  // decodes, but 4 != 6 pixels
        ("O", 2, 3),  // decodes to a negative run
        ("ooooooooooooo0", 2, 3),
    ] {
        let e = Rle::from_coco_string(counts, h, w).expect_err(counts);
        assert!(
            matches!(
                e,
                RegionError::RleString { .. } | RegionError::RleLength { .. }
            ),
            "{counts:?}: {e:?}"
        );
        one_line(&e);
    }
    for bad in [
        json!({"size": [2, 2]}),
        json!({"size": [2], "counts": "4"}),
        json!({"size": [2, 2], "counts": 4}),
        json!({"size": [2, 2], "counts": [-1, 5]}),
        json!({"size": [2, 2], "counts": [1, 2]}),
        json!({"size": [2, 2], "counts": "5"}),
    ] {
        assert!(serde_json::from_value::<Rle>(bad.clone()).is_err(), "{bad}");
        assert!(Rle::from_json_str(&bad.to_string()).is_err(), "{bad}");
    }
    assert!(matches!(
        Rle::from_json_str("{"),
        Err(RegionError::CocoJson { .. })
    ));
}

#[test]
fn bad_segmentation_json_is_an_error() {
    for bad in [
        json!([1, 2, 3, 4]),
        json!([0, 0, 3, 0, 3, 3]),
        json!("polygon"),
        json!([]),
        json!(3),
        json!([[1, 2, 3]]),
        json!([[0, 0, 3, 0, 3, 3, 1]]),
        json!([[0, 0, 3, 0, 3, 3], [0, "x", 1, 1, 2, 2]]),
        json!([[0, 0, 1, 1], [0, 0, 3, 0, 3, 3]]),
        json!({"size": [3, 3], "counts": [9]}),
        json!([{"size": [4, 4], "counts": [16]}, {"size": [3, 3], "counts": [9]}]),
    ] {
        let a = fr_py_objects(&bad, 4, 4);
        let b = ann_to_rle(&bad, 4, 4);
        assert!(b.is_err(), "{bad}: {b:?}");
        if let Err(e) = a {
            one_line(&e);
        }
    }
}

#[test]
fn merge_and_iou_need_matching_inputs() {
    assert!(matches!(
        Rle::merge(&[], false),
        Err(RegionError::EmptyMerge)
    ));
    let a = Rle::from_uncompressed(2, 2, vec![1, 2, 1]).expect("a");
    let b = Rle::from_uncompressed(2, 3, vec![1, 5]).expect("b");
    let e = Rle::merge(&[a.clone(), b.clone()], true).expect_err("sizes differ");
    assert!(
        matches!(e, RegionError::RleSizesDiffer { index: 1, .. }),
        "{e:?}"
    );
    let broken = Rle {
        height: 2,
        width: 2,
        counts: vec![1, 1],
    };
    assert!(matches!(
        Rle::merge(&[a.clone(), broken.clone()], false),
        Err(RegionError::RleLength { .. })
    ));

    // Hand-built RLEs on sizes no image can have are refused before their
    // runs are walked in u32.
    let huge = Rle {
        height: 100_000,
        width: 100_000,
        counts: vec![u32::MAX, u32::MAX, u32::MAX],
    };
    let pair = [huge.clone(), huge.clone()];
    assert!(matches!(
        Rle::merge(&pair, false),
        Err(RegionError::ImageSize { .. })
    ));
    assert!(matches!(
        mask_iou(&huge, &huge, true),
        Err(RegionError::ImageSize { .. })
    ));
    assert!(matches!(
        Bitmap::from_rle(&huge),
        Err(RegionError::ImageSize { .. })
    ));

    assert!(matches!(
        rle_iou(std::slice::from_ref(&a), std::slice::from_ref(&a), &[]),
        Err(RegionError::CrowdLength { .. })
    ));
    assert!(matches!(
        mask_iou(&a, &b, false),
        Err(RegionError::RleSizesDiffer { .. })
    ));
    assert!(matches!(
        mask_iou(&a, &broken, false),
        Err(RegionError::RleLength { .. })
    ));
    assert!(matches!(
        bbox_iou(
            &[[0.0, 0.0, 1.0, 1.0]],
            &[[0.0, 0.0, 1.0, 1.0]],
            &[true, false]
        ),
        Err(RegionError::CrowdLength { .. })
    ));
    assert_eq!(mask_iou(&a, &a, false).expect("self"), 1.0);
    assert_eq!(
        rle_iou(&[], std::slice::from_ref(&a), &[false]).expect("no dt"),
        Vec::<Vec<f64>>::new()
    );
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rgpt-region-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

#[test]
fn mask_png_specs() {
    // 6 rows x 8 columns, a 2x3 block set with assorted non-zero values.
    let mut gray = image::GrayImage::new(8, 6);
    for (x, y, v) in [
        (2, 1, 255),
        (3, 1, 1),
        (4, 1, 7),
        (2, 2, 255),
        (3, 2, 255),
        (4, 2, 2),
    ] {
        gray.put_pixel(x, y, image::Luma([v]));
    }
    let gray_path = temp_path("gray.png");
    gray.save(&gray_path).expect("write png");
    let spec: RegionSpec = format!("mask:{}", gray_path.display())
        .parse()
        .expect("mask spec");
    assert_eq!(spec.area(6, 8).expect("area"), 6);
    assert_eq!(spec.bbox(6, 8).expect("bbox"), [2.0, 1.0, 3.0, 2.0]);
    let bitmap = rasterize(&spec, 6, 8).expect("rasterize");
    assert_eq!(bitmap.get(3, 1), Some(true));
    assert_eq!(bitmap.get(5, 1), Some(false));
    let e = to_rle_err(&spec, 8, 6);
    assert!(
        matches!(
            e,
            RegionError::SizeMismatch {
                got_height: 6,
                got_width: 8,
                ..
            }
        ),
        "{e:?}"
    );

    // RGB: a faint blue pixel counts.
    let mut rgb = image::RgbImage::new(3, 2);
    rgb.put_pixel(1, 1, image::Rgb([0, 0, 1]));
    let rgb_path = temp_path("rgb.png");
    rgb.save(&rgb_path).expect("write png");
    let spec: RegionSpec = format!("mask:{}", rgb_path.display())
        .parse()
        .expect("rgb mask");
    assert_eq!(spec.bbox(2, 3).expect("bbox"), [1.0, 1.0, 1.0, 1.0]);

    let black_path = temp_path("black.png");
    image::GrayImage::new(4, 4)
        .save(&black_path)
        .expect("write png");
    let spec: RegionSpec = format!("mask:{}", black_path.display())
        .parse()
        .expect("black mask");
    assert!(matches!(
        to_rle_err(&spec, 4, 4),
        RegionError::ZeroArea { .. }
    ));

    let junk_path = temp_path("junk.png");
    std::fs::write(&junk_path, b"not a png").expect("write junk");
    for path in [junk_path.clone(), temp_path("missing.png")] {
        let e = spec_err(&format!("mask:{}", path.display()));
        assert!(matches!(e, RegionError::MaskImage { .. }), "{e:?}");
        assert!(one_line(&e).contains(&path.display().to_string()));
    }
    let _ = std::fs::remove_dir_all(junk_path.parent().expect("temp dir"));
}

#[test]
fn point_specs_are_disks() {
    // Default radius: shorter side / 16 = 4 px on 64x96.
    let spec = RegionSpec::point(20.0, 30.0);
    let b = rasterize(&spec, 64, 96).expect("point");
    let area = b.area();
    assert!((40..=60).contains(&area), "area {area}");
    assert_eq!(spec.bbox(64, 96).expect("bbox"), [16.0, 26.0, 8.0, 8.0]);
    assert_eq!(b.get(20, 30), Some(true));
    // A tiny radius still marks the pixel holding the point.
    let tiny = RegionSpec::Point {
        x: 2.9,
        y: 0.1,
        radius: Some(0.05),
    };
    assert_eq!(tiny.bbox(4, 4).expect("tiny"), [2.0, 0.0, 1.0, 1.0]);
    // A point on a tiny image falls back to a 1 px radius.
    assert_eq!(RegionSpec::point(0.5, 0.5).area(1, 1).expect("1x1"), 1);
    // A disk near the border is clipped, not refused.
    let edge = RegionSpec::Point {
        x: 0.0,
        y: 0.0,
        radius: Some(3.0),
    };
    assert!(edge.area(10, 10).expect("edge") > 4);
}

/// Random bytes through every parser: errors are fine, panics are not.
#[test]
fn parsers_do_not_panic_on_garbage() {
    let mut state = 0x1234_5678_9ABC_DEF1u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet: Vec<char> = "0123456789OoP_`;:,.-e{}[]\"boxplymaskrlent "
        .chars()
        .collect();
    for _ in 0..3000 {
        let len = (next() % 24) as usize;
        let text: String = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let _ = Rle::from_coco_string(&text, 3, 4);
        let _ = Rle::from_json_str(&text);
        for prefix in ["box:", "poly:", "point:", "rle:", ""] {
            if let Ok(spec) = format!("{prefix}{text}").parse::<RegionSpec>() {
                let _ = spec.to_rle(7, 9);
            }
        }
    }
}
