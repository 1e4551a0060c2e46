//! What a task runner asks: every answer of every sample in the
//! conversation format becomes one question, asked with the gold
//! conversation before it (the image given once, at the start, as in
//! training) and scored against that answer and the sample's `meta`.
use std::collections::BTreeMap;

use rgpt_data::format::{Speaker, REGION_TOKEN};
use rgpt_data::{Region, Sample};
use serde_json::Value;

pub use crate::task::TaskKind;
use crate::EvalError;

/// One question of the evaluation.
#[derive(Debug, Clone)]
pub struct EvalItem {
    /// `{sample id}#{turn}`.
    pub id: String,
    pub task: String,
    pub kind: TaskKind,
    pub image: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// (human, gold answer) turns before this one, then this question.
    pub history: Vec<(String, String)>,
    pub question: String,
    /// The regions the history and question refer to, in order.
    pub regions: Vec<Region>,
    /// The gold answer.
    pub answer: String,
    /// Reference captions (captioning), the gold answer otherwise.
    pub references: Vec<String>,
    /// REC: the 1-based target among `regions`, or none for no match.
    pub target: Option<usize>,
    /// REC with proposals: the ground-truth box `[x, y, w, h]`; a chosen
    /// candidate is right when its IoU with it is at least 0.5.
    pub ground_truth: Option<[f64; 4]>,
    /// small / medium / large, when the data says (synthetic world) or
    /// can be computed (COCO area classes of the box).
    pub size: Option<String>,
}

fn meta_at<'a>(sample: &'a Sample, key: &str, turn: usize) -> Option<&'a Value> {
    sample.meta.as_ref()?.get(key)?.as_array()?.get(turn)
}

/// The questions of one sample, one per answer.
pub fn items_of(sample: &Sample) -> Result<Vec<EvalItem>, EvalError> {
    let kind = TaskKind::of(&sample.task).ok_or_else(|| EvalError::Sample {
        id: sample.id.clone(),
        message: format!(
            "task `{}` has no evaluation; expected a classification (-cls, synth-shape, \
             synth-color), REC (-rec) or caption (-cap, vg, *caption) task",
            sample.task
        ),
    })?;
    sample.validate()?;
    let mut items = Vec::new();
    let mut history: Vec<(String, String)> = Vec::new();
    let mut regions_so_far = 0;
    for (turn, pair) in sample.conversations.chunks(2).enumerate() {
        let [question, answer] = pair else { break };
        if question.from != Speaker::Human || answer.from != Speaker::Gpt {
            break;
        }
        regions_so_far += question.value.matches(REGION_TOKEN).count();
        let target = match meta_at(sample, "targets", turn) {
            Some(Value::Number(n)) => n.as_u64().map(|k| k as usize),
            _ => None,
        };
        let size = match kind {
            TaskKind::Rec => target
                .and_then(|k| sample.meta.as_ref()?.get("sizes")?.get(k - 1)?.as_str())
                .map(str::to_string),
            _ => meta_at(sample, "sizes", turn)
                .or_else(|| sample.meta.as_ref().and_then(|m| m.get("size")))
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        let references = match meta_at(sample, "references", turn) {
            Some(Value::Array(refs)) => refs
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => vec![answer.value.clone()],
        };
        items.push(EvalItem {
            id: format!("{}#{turn}", sample.id),
            task: sample.task.clone(),
            kind,
            image: sample.image.clone(),
            width: sample.width,
            height: sample.height,
            history: history.clone(),
            question: question.value.clone(),
            regions: sample.regions[..regions_so_far].to_vec(),
            answer: answer.value.clone(),
            references,
            target,
            ground_truth: sample
                .meta
                .as_ref()
                .and_then(|m| m.get("ground_truth"))
                .and_then(|v| serde_json::from_value(v.clone()).ok()),
            size,
        });
        history.push((question.value.clone(), answer.value.clone()));
    }
    Ok(items)
}

/// The control for "does the model read its regions?": each question is
/// asked with the regions of the next question that has as many regions,
/// on an image of the same size (its own image, history and question
/// kept), so a model that ignores regions answers exactly as before and one
/// that reads them mostly does not. A question alone in its group keeps its
/// regions; the number of such questions is returned.
pub fn shuffle_regions(items: &mut [EvalItem]) -> usize {
    let mut groups: BTreeMap<(usize, Option<u32>, Option<u32>), Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        groups
            .entry((item.regions.len(), item.width, item.height))
            .or_default()
            .push(i);
    }
    let mut alone = 0;
    for members in groups.values() {
        if members.len() < 2 {
            alone += members.len();
            continue;
        }
        let first = items[members[0]].regions.clone();
        for pair in members.windows(2) {
            items[pair[0]].regions = items[pair[1]].regions.clone();
        }
        items[members[members.len() - 1]].regions = first;
    }
    alone
}

/// POPE questions as evaluation items: the question after the image,
/// answered yes or no.
pub fn pope_items(
    questions: &[rgpt_data::readers::pope::PopeQuestion],
    task: &str,
) -> Vec<EvalItem> {
    questions
        .iter()
        .map(|q| EvalItem {
            id: q.question_id.to_string(),
            task: task.to_string(),
            kind: TaskKind::Pope,
            image: Some(q.image.clone()),
            width: None,
            height: None,
            history: Vec::new(),
            question: format!("{}\n{}", rgpt_data::format::IMAGE_TOKEN, q.text),
            regions: Vec::new(),
            answer: q.label.clone(),
            references: vec![q.label.clone()],
            target: None,
            ground_truth: None,
            size: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: usize, regions: usize, width: u32) -> EvalItem {
        EvalItem {
            id: format!("{id}#0"),
            task: "synth-shape".into(),
            kind: TaskKind::Classification,
            image: Some(format!("{id}.png")),
            width: Some(width),
            height: Some(width),
            history: Vec::new(),
            question: "What is <region>?".into(),
            regions: (0..regions)
                .map(|k| Region::Box([id as f64, k as f64, 10.0, 10.0]))
                .collect(),
            answer: "circle".into(),
            references: vec!["circle".into()],
            target: None,
            ground_truth: None,
            size: None,
        }
    }

    #[test]
    fn every_question_takes_another_questions_regions_of_its_kind() {
        let mut items = vec![
            item(0, 1, 64),
            item(1, 2, 64),
            item(2, 1, 64),
            item(3, 1, 64),
            item(4, 2, 64),
            item(5, 1, 32),
        ];
        let before = items.clone();
        assert_eq!(shuffle_regions(&mut items), 1);
        let owner = |regions: &[Region]| match regions[0] {
            Region::Box([x, ..]) => x as usize,
            _ => unreachable!(),
        };
        let owners: Vec<usize> = items.iter().map(|i| owner(&i.regions)).collect();
        // 1-region questions on 64 px rotate among themselves, 2-region
        // ones swap, the lone 32 px one keeps its own.
        assert_eq!(owners, [2, 4, 3, 0, 1, 5]);
        for (now, was) in items.iter().zip(&before) {
            assert_eq!(now.regions.len(), was.regions.len());
            assert_eq!((&now.image, &now.question), (&was.image, &was.question));
        }
        // Every region list is still used once.
        let mut sorted = owners.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2, 3, 4, 5]);
    }
}
