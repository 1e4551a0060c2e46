//! Readers and builders on the committed fixtures in the datasets' published
//! layouts (`scripts/fixtures/dataset_formats.py`): each builder's
//! conversations, the per-category balancing, the 10-regions cap, the REC
//! negatives, and the skip summary.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rgpt_data::builders::classification::{build_classification, ClassificationOptions};
use rgpt_data::builders::llava::build_llava;
use rgpt_data::builders::mix::{mix, MixInput};
use rgpt_data::builders::refcocog::{build_refcocog_caption, build_refcocog_rec, RefcocogOptions};
use rgpt_data::builders::vg::{build_vg, VgOptions};
use rgpt_data::builders::RegionKind;
use rgpt_data::format::{read_all_samples, write_samples};
use rgpt_data::readers::coco::CocoDataset;
use rgpt_data::readers::{pope, refcoco};
use rgpt_data::{PromptBank, Region, Sample, Speaker};

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/datasets")
        .join(path)
}

fn prompts() -> PromptBank {
    PromptBank::from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/prompts"))
        .unwrap()
}

fn answers(sample: &Sample) -> Vec<&str> {
    sample
        .conversations
        .iter()
        .filter(|t| t.from == Speaker::Gpt)
        .map(|t| t.value.as_str())
        .collect()
}

#[test]
fn coco_classification_asks_one_region_per_turn_with_the_task_guided_prompt() {
    let coco = CocoDataset::read(&data("coco/instances_val2017.json")).unwrap();
    let prompts = prompts();
    let built = build_classification(&coco, &prompts, &ClassificationOptions::coco()).unwrap();
    // 7 usable annotations over 3 images; the crowd RLE, the degenerate
    // box and the unknown category are counted, not dropped silently.
    assert_eq!(built.samples.len(), 3);
    assert_eq!(built.skips.count("crowd annotation"), 1);
    assert_eq!(built.skips.count("unknown category"), 1);
    assert_eq!(
        built
            .skips
            .count("degenerate box (width or height under 1 px)"),
        1
    );
    let by_image: BTreeMap<&str, &Sample> = built
        .samples
        .iter()
        .map(|s| (s.image.as_deref().unwrap(), s))
        .collect();
    let sample = by_image["000000000139.jpg"];
    sample.validate().unwrap();
    assert_eq!((sample.width, sample.height), (Some(64), Some(48)));
    let first = &sample.conversations[0].value;
    assert!(first.starts_with("<image>\n"), "{first}");
    assert!(
        first.ends_with("Answer the question using COCO-80 category names."),
        "{first}"
    );
    assert_eq!(first.matches("<region>").count(), 1);
    // Later questions carry no guide; answers are the category names of
    // the regions, in turn order.
    assert!(!sample.conversations[2]
        .value
        .contains("Answer the question"));
    let meta = sample.meta.as_ref().unwrap();
    let ids: Vec<u64> = serde_json::from_value(meta["annotation_ids"].clone()).unwrap();
    let names: Vec<&str> = ids
        .iter()
        .map(|id| match id {
            1 => "person",
            2 => "car",
            other => panic!("annotation {other} is not of image 139"),
        })
        .collect();
    assert_eq!(answers(sample), names);
    // Boxes are COCO [x,y,w,h] turned into corners.
    let ann = coco.annotations.iter().find(|a| a.id == ids[0]).unwrap();
    let [x, y, w, h] = ann.bbox;
    assert_eq!(sample.regions[0], Region::Box([x, y, x + w, y + h]));
}

#[test]
fn v3det_classification_balances_categories() {
    let v3det = CocoDataset::read(&data("v3det/v3det_2023_v1_train.json")).unwrap();
    let prompts = prompts();
    let built = build_classification(&v3det, &prompts, &ClassificationOptions::v3det(10)).unwrap();
    let mut per_category: BTreeMap<String, usize> = BTreeMap::new();
    for sample in &built.samples {
        sample.validate().unwrap();
        assert!(!sample.conversations[0]
            .value
            .contains("Answer the question"));
        for answer in answers(sample) {
            *per_category.entry(answer.to_string()).or_default() += 1;
        }
    }
    // 15, 5 and 2 boxes: capped at 10, the rest kept.
    assert_eq!(per_category["Abyssinian"], 10);
    assert_eq!(per_category["accordion"], 5);
    assert_eq!(per_category["acorn squash"], 2);
    assert_eq!(built.skips.count("over the per-category cap"), 5);
    // The same seed picks the same boxes; another seed other ones.
    let again = build_classification(&v3det, &prompts, &ClassificationOptions::v3det(10)).unwrap();
    assert_eq!(again.samples, built.samples);
    let other = build_classification(
        &v3det,
        &prompts,
        &ClassificationOptions {
            seed: 1,
            ..ClassificationOptions::v3det(10)
        },
    )
    .unwrap();
    assert_ne!(other.samples, built.samples);
}

#[test]
fn refcocog_pickle_reads_and_captions_use_its_sentences() {
    let refs = refcoco::read_refs(&data("refcocog/refs(umd).p")).unwrap();
    assert_eq!(refs.len(), 7);
    assert_eq!(refs[0].sentences[1].sent, "person in a red shirt");
    assert_eq!(refs[6].split, "val");
    let instances = CocoDataset::read(&data("refcocog/instances.json")).unwrap();
    let built =
        build_refcocog_caption(&instances, &refs, &prompts(), &RefcocogOptions::default()).unwrap();
    // Train split: images 139 and 285 (2 refs each).
    assert_eq!(built.samples.len(), 2);
    for sample in &built.samples {
        sample.validate().unwrap();
        let meta = sample.meta.as_ref().unwrap();
        let references: Vec<Vec<String>> =
            serde_json::from_value(meta["references"].clone()).unwrap();
        for (answer, refs) in answers(sample).iter().zip(&references) {
            assert!(refs.iter().any(|r| r == answer), "{answer} not in {refs:?}");
        }
        // Mask regions: the annotations' polygons.
        assert!(matches!(sample.regions[0], Region::Polygon(_)));
    }
}

#[test]
fn refcocog_rec_answers_the_template_and_adds_negatives() {
    let refs = refcoco::read_refs(&data("refcocog/refs(umd).p")).unwrap();
    let instances = CocoDataset::read(&data("refcocog/instances.json")).unwrap();
    let prompts = prompts();
    let options = RefcocogOptions {
        negative_probability: 1.0,
        ..RefcocogOptions::default()
    };
    let built = build_refcocog_rec(&instances, &refs, &prompts, &options).unwrap();
    assert_eq!(built.samples.len(), 2);
    let ann_category: BTreeMap<u64, u64> = instances
        .annotations
        .iter()
        .map(|a| (a.id, a.category_id))
        .collect();
    for sample in &built.samples {
        sample.validate().unwrap();
        let meta = sample.meta.as_ref().unwrap();
        let candidates: Vec<u64> =
            serde_json::from_value(meta["candidate_annotation_ids"].clone()).unwrap();
        let targets: Vec<Option<usize>> = serde_json::from_value(meta["targets"].clone()).unwrap();
        // All candidates are listed in the first question, with the guide.
        let first = &sample.conversations[0].value;
        assert_eq!(first.matches("<region>").count(), candidates.len());
        assert!(first.ends_with("Answer the question using the template Region [x]."));
        assert_eq!(targets.iter().filter(|t| t.is_none()).count(), 1);
        let present: Vec<u64> = candidates.iter().map(|id| ann_category[id]).collect();
        for ((turn, target), answer) in sample
            .conversations
            .chunks(2)
            .zip(&targets)
            .zip(answers(sample))
        {
            let question = &turn[0].value;
            match target {
                Some(k) => {
                    assert_eq!(answer, format!("Region [{k}]."));
                    // The expression is one of the target object's sentences.
                    let ann = candidates[k - 1];
                    let r = refs.iter().find(|r| r.ann_id == ann).unwrap();
                    assert!(
                        r.sentences.iter().any(|s| question.contains(&s.sent)),
                        "{question}"
                    );
                }
                None => {
                    assert_eq!(answer, "No corresponding options found.");
                    // The negative's expression is about an absent category.
                    let r = refs
                        .iter()
                        .find(|r| r.sentences.iter().any(|s| question.contains(&s.sent)))
                        .unwrap();
                    assert!(!present.contains(&r.category_id), "{question}");
                }
            }
        }
    }
    let none = build_refcocog_rec(
        &instances,
        &refs,
        &prompts,
        &RefcocogOptions {
            negative_probability: 0.0,
            ..RefcocogOptions::default()
        },
    )
    .unwrap();
    for sample in &none.samples {
        assert!(!answers(sample).contains(&"No corresponding options found."));
    }
    let boxes = build_refcocog_rec(
        &instances,
        &refs,
        &prompts,
        &RefcocogOptions {
            region_kind: RegionKind::Box,
            ..RefcocogOptions::default()
        },
    )
    .unwrap();
    assert!(matches!(boxes.samples[0].regions[0], Region::Box(_)));
}

#[test]
fn visual_genome_keeps_at_most_ten_regions_per_image() {
    let built = build_vg(
        &data("vg/region_descriptions.json"),
        &prompts(),
        &VgOptions {
            image_prefix: "VG_100K/".into(),
            ..VgOptions::default()
        },
    )
    .unwrap();
    assert_eq!(built.samples.len(), 2);
    let first = &built.samples[0];
    first.validate().unwrap();
    assert_eq!(first.image.as_deref(), Some("VG_100K/1.jpg"));
    // 12 regions: one zero-width, one empty phrase, 10 kept, none over.
    assert_eq!(first.regions.len(), 10);
    assert_eq!(
        built
            .skips
            .count("degenerate box (width or height under 1 px)"),
        1
    );
    assert_eq!(built.skips.count("empty phrase"), 1);
    assert_eq!(built.skips.count("beyond the regions-per-image cap"), 0);
    let capped = build_vg(
        &data("vg/region_descriptions.json"),
        &prompts(),
        &VgOptions {
            max_regions: 4,
            ..VgOptions::default()
        },
    )
    .unwrap();
    assert_eq!(capped.samples[0].regions.len(), 4);
    assert_eq!(capped.skips.count("beyond the regions-per-image cap"), 6);
    // Answers are the kept regions' phrases, turn by turn.
    let ids: Vec<u64> =
        serde_json::from_value(first.meta.as_ref().unwrap()["region_ids"].clone()).unwrap();
    for (id, answer) in ids.iter().zip(answers(first)) {
        assert_eq!(answer, format!("region phrase number {}", id - 1000));
    }
}

#[test]
fn llava_conversations_pass_through_and_pope_reads() {
    let built = build_llava(&data("llava/llava_mini.json")).unwrap();
    let ids: Vec<&str> = built.samples.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["004539375", "17", "x1"]);
    assert_eq!(built.samples[1].image, None);
    assert_eq!(built.samples[2].conversations.len(), 4);
    assert_eq!(built.skips.count("unknown speaker"), 1);
    let questions = pope::read_questions(&data("pope/coco_pope_random.json")).unwrap();
    assert_eq!(questions.len(), 3);
    assert_eq!(questions[1].label, "no");
}

#[test]
fn mixing_weights_files_and_shuffles_deterministically() {
    let dir = std::env::temp_dir().join(format!("rgpt-data-mix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let llava = build_llava(&data("llava/llava_mini.json")).unwrap();
    let vg = build_vg(
        &data("vg/region_descriptions.json"),
        &prompts(),
        &VgOptions::default(),
    )
    .unwrap();
    write_samples(&dir.join("llava.jsonl"), &llava.samples).unwrap();
    write_samples(&dir.join("vg.jsonl"), &vg.samples).unwrap();
    let inputs: Vec<MixInput> = [
        format!("{}:2", dir.join("llava.jsonl").display()),
        format!("{}:0.5", dir.join("vg.jsonl").display()),
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let mixed = mix(&inputs, 3).unwrap();
    // 3 LLaVA samples twice, and 1 of the 2 VG images.
    assert_eq!(mixed.samples.len(), 7);
    assert_eq!(
        mixed.samples.iter().filter(|s| s.task == "llava").count(),
        6
    );
    assert_eq!(mixed.skips.count("not drawn at the input's weight"), 1);
    let mut ids: Vec<&str> = mixed.samples.iter().map(|s| s.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 7, "copies get distinct ids");
    assert_eq!(mix(&inputs, 3).unwrap().samples, mixed.samples);
    write_samples(&dir.join("mix.jsonl"), &mixed.samples).unwrap();
    assert_eq!(
        read_all_samples(&dir.join("mix.jsonl")).unwrap(),
        mixed.samples
    );
    assert!(!dir.join("mix.jsonl.tmp").exists());
}

#[test]
fn malformed_input_names_file_and_line() {
    let dir = std::env::temp_dir().join(format!("rgpt-data-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.jsonl");
    std::fs::write(
        &path,
        "{\"id\":\"a\",\"conversations\":[{\"from\":\"human\",\"value\":\"hi\"}]}\n\n{oops\n",
    )
    .unwrap();
    let err = read_all_samples(&path).unwrap_err().to_string();
    assert!(err.contains("bad.jsonl:3: malformed JSON"), "{err}");
    let err = CocoDataset::read(&data("vg/objects.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("objects.json: malformed COCO instances JSON"),
        "{err}"
    );
    let err = refcoco::read_refs(&data("vg/objects.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("malformed RefCOCOg refs pickle"), "{err}");
    let err = build_llava(&dir.join("missing.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot read") && err.contains("missing.json"),
        "{err}"
    );
}

#[test]
fn stats_count_tasks_regions_words_and_areas() {
    let coco = CocoDataset::read(&data("coco/instances_val2017.json")).unwrap();
    let built = build_classification(&coco, &prompts(), &ClassificationOptions::coco()).unwrap();
    let mut stats = rgpt_data::stats::DatasetStats::default();
    for sample in &built.samples {
        stats.add(sample);
    }
    let cls = &stats.by_task["coco-cls"];
    assert_eq!((cls.samples, cls.regions, cls.answers), (3, 7, 7));
    assert_eq!(cls.turns, 14);
    // Every answer is one category name of one word.
    assert_eq!(cls.words_per_answer(), 1.0);
    // The boxes of the fixture are all under 32x32 px.
    assert_eq!(stats.area_classes["small"], 7);
    assert_eq!(stats.area_fractions.values().sum::<u64>(), 7);
    let table = stats.to_string();
    assert!(table.contains("coco-cls"), "{table}");
    assert_eq!(
        rgpt_data::stats::region_area(&Region::Polygon(vec![vec![0.0, 0.0, 4.0, 0.0, 0.0, 3.0]])),
        Some(6.0)
    );
}

#[test]
fn refcocog_rec_with_proposals_adds_the_ground_truth_only_when_missed() {
    use rgpt_data::builders::refcocog::{build_refcocog_rec_eval, Proposal};
    let refs = refcoco::read_refs(&data("refcocog/refs(umd).p")).unwrap();
    let instances = CocoDataset::read(&data("refcocog/instances.json")).unwrap();
    let ann = |id: u64| {
        instances
            .annotations
            .iter()
            .find(|a| a.id == id)
            .unwrap()
            .bbox
    };
    let [x, y, w, h] = ann(1);
    let proposals = vec![
        Proposal {
            image_id: 139,
            bbox: [x + 1.0, y, w, h - 1.0],
            score: 0.9,
        },
        Proposal {
            image_id: 139,
            bbox: [0.0, 40.0, 5.0, 5.0],
            score: 0.8,
        },
        Proposal {
            image_id: 285,
            bbox: [40.0, 50.0, 6.0, 6.0],
            score: 0.7,
        },
    ];
    let built = build_refcocog_rec_eval(
        &instances,
        &refs,
        &proposals,
        &prompts(),
        &RefcocogOptions::default(),
    )
    .unwrap();
    // One question per train sentence: 3 for image 139, 3 for image 285.
    assert_eq!(built.samples.len(), 6);
    // Annotation 1 is found by a proposal; 2, 3 and 4 are not.
    assert_eq!(
        built
            .skips
            .count("ground truth added: no proposal reaches IoU 0.5"),
        3
    );
    for sample in &built.samples {
        sample.validate().unwrap();
        let meta = sample.meta.as_ref().unwrap();
        let target = meta["targets"][0].as_u64().unwrap() as usize;
        let truth: [f64; 4] = serde_json::from_value(meta["ground_truth"].clone()).unwrap();
        let Region::Box([x1, y1, x2, y2]) = sample.regions[target - 1] else {
            panic!("proposal regions are boxes")
        };
        let iou = rgpt_region::iou::bbox_iou_one([x1, y1, x2 - x1, y2 - y1], truth, false);
        assert!(iou >= 0.5, "{iou}");
        assert_eq!(answers(sample), [format!("Region [{target}].")]);
    }
}

/// pycocotools reads annotations without a `bbox` (only what a task uses
/// is looked at); so does `CocoDataset::read`, giving each the box of its
/// segmentation (`maskUtils.toBbox(annToRLE(ann))`). Before issue 25 such
/// a file was refused (`missing field bbox`).
#[test]
fn annotations_without_a_bbox_get_their_masks_box() {
    let path = data("coco/instances_val2017.json");
    let original = CocoDataset::read(&path).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut stripped = 0;
    for ann in json["annotations"].as_array_mut().unwrap() {
        if ann.get("segmentation").is_some() {
            ann.as_object_mut().unwrap().remove("bbox");
            stripped += 1;
        }
    }
    assert!(stripped >= 5, "the fixture's annotations have masks");
    let dir = std::env::temp_dir().join(format!("rgpt-coco-nobbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("instances.json");
    std::fs::write(&file, json.to_string()).unwrap();
    let read = CocoDataset::read(&file).unwrap();
    let sizes: BTreeMap<u64, (u32, u32)> = read
        .images
        .iter()
        .map(|i| (i.id, (i.width, i.height)))
        .collect();
    for (ann, given) in read.annotations.iter().zip(&original.annotations) {
        let (w, h) = sizes[&ann.image_id];
        let mask_box = given.to_rle(w, h).unwrap().to_bbox();
        assert_eq!(ann.bbox, mask_box, "annotation {}", ann.id);
        assert!(ann.bbox[2] > 0.0 || mask_box[2] == 0.0);
    }
    // Neither a box nor a mask: an error naming the annotation.
    let first = &mut json["annotations"][0];
    first.as_object_mut().unwrap().remove("segmentation");
    let id = first["id"].clone();
    std::fs::write(&file, json.to_string()).unwrap();
    let e = CocoDataset::read(&file).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "annotation {id} has neither a bbox nor a segmentation"
        )),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Fuzz-style: the RefCOCOg refs pickle cut anywhere, or with random bytes
/// changed, is read or refused with an error naming the file; never a
/// panic (issue 25).
#[test]
fn truncated_and_mutated_refs_pickles_are_errors_not_panics() {
    let bytes = std::fs::read(data("refcocog/refs(umd).p")).unwrap();
    let dir = std::env::temp_dir().join(format!("rgpt-refs-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("refs.p");
    let mut rng = ChaCha8Rng::seed_from_u64(26);
    let step = (bytes.len() / 200).max(1);
    for end in (0..bytes.len()).step_by(step) {
        std::fs::write(&path, &bytes[..end]).unwrap();
        let e = refcoco::read_refs(&path).expect_err("a cut pickle is refused");
        assert!(e.to_string().contains("refs.p"), "{e}");
    }
    for _ in 0..500 {
        let mut mutated = bytes.clone();
        for _ in 0..rng.random_range(1..=4) {
            let at = rng.random_range(0..mutated.len());
            mutated[at] = rng.random();
        }
        std::fs::write(&path, &mutated).unwrap();
        if let Err(e) = refcoco::read_refs(&path) {
            assert!(e.to_string().contains("refs.p"), "{e}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
