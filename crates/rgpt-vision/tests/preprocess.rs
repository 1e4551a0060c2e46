//! Image preprocessing against its references.
//!
//! The expected values in tests/fixtures/preprocess/ come from
//! scripts/fixtures/preprocess.py: Pillow 13.0 `Image.resize(..., BICUBIC)`,
//! transformers 5.23 `CLIPImageProcessorPil` and `SiglipImageProcessorPil`
//! (configs saved next to them with `save_pretrained`: CLIP shortest edge 32
//! / crop 32, CLIP shortest edge 28 / crop 32, SigLIP 24x24), LLaVA-1.5's
//! `expand2square` with the mean colour, numpy seed 20240617. Pillow 13
//! picks the order of its two resize passes by size; the hand-picked and
//! random resizes cover both orders. Resizes must be bit-identical (both sides are integer
//! arithmetic); pixel values within 1e-6 (both sides do the same f64 then f32
//! operations, so the difference is expected to be exactly zero; 1e-6 only
//! leaves room for a libm difference).
use std::collections::HashMap;
use std::path::PathBuf;

use image::RgbImage;
use rgpt_vision::preprocess::{
    expand2square, load_image, resize_bicubic, CropSize, HeightWidth, ImageAspectRatio,
    PreprocessError, PreprocessorConfig, ResizeSize, ShortestEdge,
};
use tch::Tensor;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/preprocess")
}

fn tensors() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixtures().join("preprocess.safetensors"))
        .expect("fixture preprocess.safetensors")
        .into_iter()
        .collect()
}

/// `[H, W, 3]` uint8 tensor to an image.
fn to_rgb(t: &Tensor) -> RgbImage {
    let s = t.size();
    assert_eq!(s.len(), 3, "expected HWC, got {s:?}");
    let v = Vec::<u8>::try_from(t.flatten(0, -1)).expect("uint8 tensor");
    RgbImage::from_raw(s[1] as u32, s[0] as u32, v).expect("HWC buffer")
}

/// (pixels that differ, largest difference)
fn diff(a: &RgbImage, b: &RgbImage) -> (usize, u8) {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .fold((0, 0), |(n, m), (&x, &y)| {
            let d = x.abs_diff(y);
            (n + usize::from(d != 0), m.max(d))
        })
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    image: String,
    config: String,
    image_aspect_ratio: ImageAspectRatio,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixtures().join("cases.json")).expect("cases.json");
    serde_json::from_str(&text).expect("cases.json parses")
}

fn config(case: &Case) -> PreprocessorConfig {
    let mut cfg = PreprocessorConfig::from_file(
        fixtures()
            .join(&case.config)
            .join("preprocessor_config.json"),
    )
    .expect("fixture config");
    cfg.image_aspect_ratio = case.image_aspect_ratio;
    cfg
}

#[test]
fn bare_resizes_are_bit_identical_to_pillow() {
    let t = tensors();
    // The fixtures must tell PIL from a merely similar bicubic: the `image`
    // crate's CatmullRom (same kernel, float accumulation) misses somewhere.
    let mut catmull_rom_misses = 0;
    let n = t.keys().filter(|k| k.ends_with(".input")).count();
    // 8 picked by hand + 40 random sizes.
    assert_eq!(n, 48);
    for i in 0..n {
        let input = to_rgb(&t[&format!("resize.{i}.input")]);
        let expected = to_rgb(&t[&format!("resize.{i}.output")]);
        let (w, h) = expected.dimensions();
        let got = resize_bicubic(&input, w, h).expect("resize");
        let (n, m) = diff(&got, &expected);
        assert_eq!(
            n,
            0,
            "resize.{i} {:?} -> {w}x{h}: {n} bytes differ (max {m})",
            input.dimensions()
        );
        let other = image::imageops::resize(&input, w, h, image::imageops::FilterType::CatmullRom);
        catmull_rom_misses += usize::from(diff(&other, &expected).0 != 0);
    }
    assert!(catmull_rom_misses > 0, "fixtures do not discriminate");
}

#[test]
fn cases_match_pillow_llava_and_hf() {
    let t = tensors();
    let cases = cases();
    assert_eq!(cases.len(), 10);
    for case in &cases {
        let cfg = config(case);
        let image = load_image(fixtures().join(&case.image)).expect("fixture image");

        // LLaVA's expand2square.
        let padded = match case.image_aspect_ratio {
            ImageAspectRatio::Pad => {
                let (sq, _) = expand2square(&image, cfg.pad_color());
                let expected = to_rgb(&t[&format!("{}.expanded", case.name)]);
                assert_eq!(diff(&sq, &expected), (0, 0), "{}: expand2square", case.name);
                sq
            }
            ImageAspectRatio::Original => image.clone(),
        };

        // PIL's resize at the size HF asks for.
        let expected = to_rgb(&t[&format!("{}.resized", case.name)]);
        let (w, h) = cfg.resize_output_size(padded.width(), padded.height());
        assert_eq!((w, h), expected.dimensions(), "{}: resize size", case.name);
        let resized = resize_bicubic(&padded, w, h).expect("resize");
        assert_eq!(diff(&resized, &expected), (0, 0), "{}: resize", case.name);

        // The whole processor.
        let out = cfg.preprocess(&image).expect("preprocess");
        let hf = &t[&format!("{}.pixel_values", case.name)];
        assert_eq!(out.pixel_values.size(), hf.size(), "{}", case.name);
        let max = (&out.pixel_values - hf).abs().max().double_value(&[]);
        assert!(max <= 1e-6, "{}: pixel_values max |diff| {max}", case.name);
    }
}

fn assert_close(got: (f64, f64), want: (f64, f64), what: &str) {
    assert!(
        (got.0 - want.0).abs() < 1e-9 && (got.1 - want.1).abs() < 1e-9,
        "{what}: got {got:?}, want {want:?}"
    );
}

fn transform_of(name: &str) -> rgpt_vision::preprocess::ImageTransform {
    let case = cases()
        .into_iter()
        .find(|c| c.name == name)
        .expect("case exists");
    let cfg = config(&case);
    let image = load_image(fixtures().join(&case.image)).expect("fixture image");
    cfg.preprocess(&image).expect("preprocess").transform
}

#[test]
fn transform_maps_corners_where_hand_computation_says() {
    // 57x45 -> 40x32 (int(32 * 57 / 45) = 40), crop 32 from x = 4.
    let t = transform_of("down_original");
    assert_eq!(t.resized_size, (40, 32));
    assert_eq!(t.crop_offset, (4, 0));
    assert_close(t.map_point(0.0, 0.0), (-4.0, 0.0), "down (0,0)");
    assert_close(t.map_point(57.0, 45.0), (36.0, 32.0), "down (W,H)");
    assert_close(t.map_point(28.5, 22.5), (16.0, 16.0), "down centre");
    assert_eq!(t.map_box([0.0, 0.0, 57.0, 45.0]), [0.0, 0.0, 32.0, 32.0]);

    // 50x30 padded to 50x50 at y = 10, then 0.64x to 32x32, no crop.
    let t = transform_of("wide_pad");
    assert_eq!((t.pad, t.padded_size), ((0, 10), (50, 50)));
    assert_close(t.map_point(0.0, 0.0), (0.0, 6.4), "wide (0,0)");
    assert_close(t.map_point(50.0, 30.0), (32.0, 25.6), "wide (W,H)");

    // 12x21 padded to 21x21 at x = (21 - 12) // 2 = 4, up to 32x32.
    let t = transform_of("tall_pad");
    assert_eq!(t.pad, (4, 0));
    assert_close(
        t.map_point(0.0, 0.0),
        (4.0 * 32.0 / 21.0, 0.0),
        "tall (0,0)",
    );
    assert_close(
        t.map_point(12.0, 21.0),
        (16.0 * 32.0 / 21.0, 32.0),
        "tall (W,H)",
    );

    // 57x45 -> 35x28, crop 32x32: x from (35 - 32) // 2 = 1, y from
    // (28 - 32) // 2 = -2 (two rows of zeros on top).
    let t = transform_of("croppad_original");
    assert_eq!(t.resized_size, (35, 28));
    assert_eq!(t.crop_offset, (1, -2));
    assert_close(t.map_point(0.0, 0.0), (-1.0, 2.0), "croppad (0,0)");
    assert_close(t.map_point(57.0, 45.0), (34.0, 30.0), "croppad (W,H)");

    // Same size: the identity.
    let t = transform_of("exact_pad");
    assert_close(t.map_point(3.0, 7.5), (3.0, 7.5), "exact");

    // unmap inverts map.
    let t = transform_of("tall_pad");
    for p in [(0.0, 0.0), (5.5, 20.0), (12.0, 21.0)] {
        let q = t.map_point(p.0, p.1);
        assert_close(t.unmap_point(q.0, q.1), p, "unmap");
    }
}

#[test]
fn padding_rows_carry_the_mean_colour_where_the_transform_says() {
    // wide_pad: the original starts at y = 6.4 in the output, so output row
    // 0..5 is pure background. Background normalises to (int(m*255)/255 - m)/s.
    let case = cases()
        .into_iter()
        .find(|c| c.name == "wide_pad")
        .expect("case exists");
    let cfg = config(&case);
    let image = load_image(fixtures().join(&case.image)).expect("fixture image");
    let out = cfg.preprocess(&image).expect("preprocess");
    let pv = &out.pixel_values;
    let bg = cfg.pad_color();
    for (c, &b) in bg.iter().enumerate() {
        let want = ((f64::from(b) * cfg.rescale_factor) as f32 - cfg.image_mean[c] as f32)
            / cfg.image_std[c] as f32;
        let rows = pv.get(c as i64).narrow(0, 0, 4);
        let max = (rows - f64::from(want)).abs().max().double_value(&[]);
        assert!(max < 1e-6, "channel {c}: background rows off by {max}");
    }
}

#[test]
fn llava_336_preset_geometry() {
    let cfg = PreprocessorConfig::clip_vit_large_patch14_336();
    let image = RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 3, y as u8 * 5, 7]));
    let out = cfg.preprocess(&image).expect("preprocess");
    assert_eq!(out.pixel_values.size(), [3, 336, 336]);
    // Pad to 64x64 at y = 8, scale 336 / 64 = 5.25.
    assert_close(
        out.transform.map_point(0.0, 0.0),
        (0.0, 42.0),
        "preset (0,0)",
    );
    assert_close(
        out.transform.map_point(64.0, 48.0),
        (336.0, 294.0),
        "preset (W,H)",
    );
}

#[test]
fn corrupt_and_missing_files_are_one_line_errors_naming_the_file() {
    let err = load_image(fixtures().join("corrupt.png")).expect_err("truncated PNG");
    assert!(matches!(err, PreprocessError::Decode { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("corrupt.png"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");

    let err = load_image(fixtures().join("no_such_image.jpg")).expect_err("missing file");
    assert!(matches!(err, PreprocessError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("no_such_image.jpg"));

    // Text with an image extension.
    let err = load_image(fixtures().join("cases.json")).expect_err("not an image");
    assert!(err.to_string().contains("cases.json"));
}

/// A PNG of a `width` x `height` RGB image without its pixels (IHDR, an
/// empty IDAT, IEND): enough to read its size, nothing to decode.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut body = kind.to_vec();
        body.extend(data);
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
        out
    };
    let mut header = width.to_be_bytes().to_vec();
    header.extend(height.to_be_bytes());
    header.extend([8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &header));
    png.extend(chunk(b"IDAT", &[]));
    png.extend(chunk(b"IEND", &[]));
    png
}

#[test]
fn an_image_too_large_to_decode_names_the_limit_and_how_to_raise_it() {
    let dir = std::env::temp_dir().join(format!("rgpt-huge-png-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("huge.png");
    std::fs::write(&path, png_header(30_000, 30_000)).unwrap();
    // Before issue 25: "Memory limit exceeded", without the limit or a way out.
    let err = load_image(&path).expect_err("over the limit");
    assert!(matches!(err, PreprocessError::TooLarge { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("huge.png")
            && msg.contains("30000x30000")
            && msg.contains("3434 MiB decoded")
            && msg.contains("512 MiB limit")
            && msg.contains("RGPT_MAX_IMAGE_MIB"),
        "{msg}"
    );
    // Within the limit the header is not refused: decoding then fails on
    // the missing pixel data, as for any truncated file.
    std::fs::write(&path, png_header(64, 48)).unwrap();
    let err = load_image(&path).expect_err("no pixel data");
    assert!(matches!(err, PreprocessError::Decode { .. }), "{err:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_accepts_hf_spellings_and_refuses_what_it_cannot_do() {
    // openai/clip-vit-large-patch14-336's file uses bare integers.
    let cfg: PreprocessorConfig = serde_json::from_str(
        r#"{"crop_size": 336, "do_center_crop": true, "do_normalize": true,
            "do_resize": true, "feature_extractor_type": "CLIPFeatureExtractor",
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3, "size": 336}"#,
    )
    .expect("parses");
    assert_eq!(cfg.size, ResizeSize::Int(336));
    assert_eq!(cfg.crop_size.dims(), (336, 336));
    assert_eq!(cfg.resize_output_size(640, 480), (448, 336));

    // A SigLIP file leaves out do_center_crop: SigLIP's defaults apply.
    let cfg = PreprocessorConfig::from_json_str(
        r#"{"image_processor_type": "SiglipImageProcessor", "size": {"height": 384, "width": 384}}"#,
    )
    .expect("parses");
    assert!(!cfg.do_center_crop);
    assert_eq!(cfg.image_mean, [0.5; 3]);
    assert_eq!(cfg.resize_output_size(640, 480), (384, 384));
    let cfg = PreprocessorConfig::from_json_str(r#"{"size": 336}"#).expect("parses");
    assert!(cfg.do_center_crop);

    let cfg: PreprocessorConfig = serde_json::from_str("{}").expect("parses");
    assert_eq!(cfg, PreprocessorConfig::default());
    assert_eq!(
        cfg.size,
        ResizeSize::ShortestEdge(ShortestEdge { shortest_edge: 224 })
    );

    let cfg: PreprocessorConfig = serde_json::from_str(
        r#"{"size": {"height": 20, "width": 30}, "image_aspect_ratio": "pad"}"#,
    )
    .expect("parses");
    assert_eq!(cfg.resize_output_size(7, 9), (30, 20));
    assert_eq!(cfg.image_aspect_ratio, ImageAspectRatio::Pad);
    assert_eq!(
        cfg.crop_size,
        CropSize::Exact(HeightWidth {
            height: 224,
            width: 224
        })
    );

    let cfg: PreprocessorConfig = serde_json::from_str(r#"{"resample": 2}"#).expect("parses");
    assert!(matches!(
        cfg.validate(),
        Err(PreprocessError::Unsupported(_))
    ));
    let image = RgbImage::new(4, 4);
    assert!(cfg.preprocess(&image).is_err());

    // shortest_edge + longest_edge is a different rule: refuse, don't guess.
    assert!(serde_json::from_str::<PreprocessorConfig>(
        r#"{"size": {"shortest_edge": 10, "longest_edge": 20}}"#
    )
    .is_err());

    let empty = RgbImage::new(0, 5);
    assert!(matches!(
        PreprocessorConfig::default().preprocess(&empty),
        Err(PreprocessError::EmptyImage { .. })
    ));
}

/// A white box on a background of the pad colour (so the pad canvas adds no
/// edge of its own), through the whole pipeline: the white mass above the
/// background must sit where `map_box` puts the box (centroid within a third
/// of a pixel, almost nothing beyond the 2-pixel reach of the bicubic kernel
/// around it).
#[test]
fn white_box_lands_where_the_transform_maps_it() {
    const S: u32 = 24;
    let boxes = [
        [10.0, 5.0, 20.0, 15.0],
        [31.0, 2.0, 47.0, 9.0],
        [3.0, 20.0, 9.0, 29.0],
    ];
    for aspect in [ImageAspectRatio::Pad, ImageAspectRatio::Original] {
        let cfg = PreprocessorConfig {
            size: ResizeSize::ShortestEdge(ShortestEdge { shortest_edge: S }),
            crop_size: CropSize::Exact(HeightWidth {
                height: S,
                width: S,
            }),
            image_aspect_ratio: aspect,
            do_normalize: false,
            ..Default::default()
        };
        let pad_red = f64::from(cfg.pad_color()[0]) / 255.0;
        for b in boxes {
            let inside = |x: f64, y: f64| (b[0]..b[2]).contains(&x) && (b[1]..b[3]).contains(&y);
            let image = RgbImage::from_fn(50, 30, |x, y| {
                if inside(f64::from(x) + 0.5, f64::from(y) + 0.5) {
                    image::Rgb([255; 3])
                } else {
                    image::Rgb(cfg.pad_color())
                }
            });
            let out = cfg.preprocess(&image).expect("preprocess");
            let t = &out.transform;
            let m = t.map_box(b);
            let red = Vec::<f32>::try_from(out.pixel_values.get(0).flatten(0, -1)).expect("f32");
            let (mut mass, mut cx, mut cy, mut outside) = (0.0, 0.0, 0.0, 0.0);
            for y in 0..S {
                for x in 0..S {
                    let (px, py) = (f64::from(x) + 0.5, f64::from(y) + 0.5);
                    let v = (f64::from(red[(y * S + x) as usize]) - pad_red).max(0.0);
                    mass += v;
                    cx += v * px;
                    cy += v * py;
                    let near =
                        px > m[0] - 2.0 && px < m[2] + 2.0 && py > m[1] - 2.0 && py < m[3] + 2.0;
                    if !near {
                        outside += v;
                    }
                }
            }
            if m[0] == m[2] || m[1] == m[3] {
                // Cropped away entirely: only the kernel's bleed across the
                // crop edge may remain (a visible box of this size has ~18).
                assert!(mass < 1.0, "{aspect:?} {b:?}: {mass} of a cropped box");
                continue;
            }
            assert!(mass > 0.0, "{aspect:?} {b:?}: box vanished");
            let want = ((m[0] + m[2]) / 2.0, (m[1] + m[3]) / 2.0);
            let (cx, cy) = (cx / mass, cy / mass);
            assert!(
                (cx - want.0).abs() < 0.35 && (cy - want.1).abs() < 0.35,
                "{aspect:?} {b:?}: white centroid ({cx:.2}, {cy:.2}), mapped box centre {want:?}"
            );
            assert!(
                outside < 0.02 * mass,
                "{aspect:?} {b:?}: {outside} of {mass} outside"
            );
        }
    }
}
