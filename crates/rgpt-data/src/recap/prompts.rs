//! The two stages' prompts (`configs/prompts/recap.yaml`): one of ten
//! variants per image and stage, drawn from a generator seeded with the
//! run's seed and the image (so a rerun, or a resumed run, asks the same
//! questions, whatever else it does), the global caption and the class
//! name put in their places.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::prompts::PromptBank;
use crate::DataError;

/// The generator of `image`'s draws in a run seeded with `seed`: ChaCha8
/// seeded with `seed` and the FNV-1a hash of the image's key.
pub fn image_rng(seed: u64, image: &str) -> ChaCha8Rng {
    let hash = image.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    ChaCha8Rng::seed_from_u64(seed ^ hash)
}

/// Stage 1: a "describe the image in detail" variant.
pub fn global_prompt<R: Rng>(bank: &PromptBank, rng: &mut R) -> Result<String, DataError> {
    Ok(bank.pick("recap_global", rng)?.to_string())
}

/// Stage 2: the question about a region's close-up, in the context of the
/// image's `global_caption`, naming the region's `class_name` when given
/// (the paper's prompt), or not (its ablation). The caption goes in
/// without its closing full stop, as a clause of the sentence.
pub fn region_prompt<R: Rng>(
    bank: &PromptBank,
    rng: &mut R,
    global_caption: &str,
    class_name: Option<&str>,
) -> Result<String, DataError> {
    let caption = global_caption.trim().trim_end_matches('.').trim_end();
    if caption.is_empty() {
        return Err(DataError::InvalidArgument(
            "the global caption is empty: stage 2 needs stage 1's caption".into(),
        ));
    }
    let prompt = match class_name {
        Some(class) => bank
            .pick("recap_region_class", rng)?
            .replace("<ClassName>", class.trim()),
        None => bank.pick("recap_region", rng)?.to_string(),
    };
    Ok(prompt.replace("<GlobalCaption>", caption))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_variant_is_the_papers_prompt_with_its_slots_filled() {
        let bank = PromptBank::builtin().unwrap();
        assert_eq!(
            bank.variants("recap_region_class").unwrap()[0],
            "In the context of the entire image, <GlobalCaption>, describe the <ClassName> in the \
             close-up region in detail."
        );
        assert_eq!(
            bank.variants("recap_region").unwrap()[0],
            "In the context of the entire image, <GlobalCaption>, describe the close-up region in \
             detail."
        );
        for set in ["recap_global", "recap_region_class", "recap_region"] {
            assert_eq!(bank.variants(set).unwrap().len(), 10, "{set}");
        }
        // Every variant of each stage 2 set has the slots it needs, once.
        for (set, slots) in [
            (
                "recap_region_class",
                &["<GlobalCaption>", "<ClassName>"][..],
            ),
            ("recap_region", &["<GlobalCaption>"][..]),
        ] {
            for variant in bank.variants(set).unwrap() {
                for slot in slots {
                    assert_eq!(variant.matches(slot).count(), 1, "{set}: {variant}");
                }
                assert_eq!(
                    variant.matches("<ClassName>").count(),
                    slots.len() - 1,
                    "{variant}"
                );
            }
        }
    }

    #[test]
    fn prompts_are_drawn_per_image_and_filled() {
        let bank = PromptBank::builtin().unwrap();
        let ask = |seed, image: &str, class| {
            let mut rng = image_rng(seed, image);
            let global = global_prompt(&bank, &mut rng).unwrap();
            let region = region_prompt(&bank, &mut rng, " A dog on a sofa. ", class).unwrap();
            (global, region)
        };
        // The same seed and image ask the same; the draws vary over images.
        assert_eq!(ask(0, "a.jpg", Some("dog")), ask(0, "a.jpg", Some("dog")));
        let drawn: std::collections::BTreeSet<_> = (0..40)
            .map(|i| ask(0, &format!("{i}.jpg"), Some("dog")).0)
            .collect();
        assert!(drawn.len() >= 5, "{drawn:?}");
        let (_, region) = ask(3, "b.jpg", Some(" zebra "));
        assert!(
            region.contains("A dog on a sofa") && !region.contains("sofa."),
            "{region}"
        );
        assert!(
            region.contains("the zebra ") && !region.contains('<'),
            "{region}"
        );
        let (_, without) = ask(3, "b.jpg", None);
        assert!(
            !without.contains("zebra") && !without.contains('<'),
            "{without}"
        );
        let mut rng = image_rng(0, "c.jpg");
        assert!(region_prompt(&bank, &mut rng, " . ", Some("dog")).is_err());
    }
}
