//! Referring-expression comprehension accuracy (paper Table 5): the answer
//! names a candidate as `Region [k]` (the task-guided template; case and
//! spacing tolerated, e.g. `region[2]`, `Region [ 2 ].`), and is correct
//! when that candidate's box has IoU >= 0.5 with the ground truth. An
//! answer without a parseable index, or with one outside the candidates, is
//! wrong. Candidates are proposals; when none reaches IoU 0.5 with the
//! ground truth, the ground-truth box is added (the paper's protocol).
use rgpt_region::iou::box_iou_xyxy;

/// The 1-based index of `Region [k]` in an answer, if there is one (the
/// first occurrence counts).
pub fn parse_region_index(answer: &str) -> Option<usize> {
    let lower = answer.to_lowercase();
    let mut rest = lower.as_str();
    while let Some(at) = rest.find("region") {
        let after = rest[at + "region".len()..].trim_start();
        if let Some(inner) = after.strip_prefix('[') {
            let inner = inner.trim_start();
            let digits: String = inner.chars().take_while(char::is_ascii_digit).collect();
            if !digits.is_empty() && inner[digits.len()..].trim_start().starts_with(']') {
                return digits.parse().ok();
            }
        }
        rest = &rest[at + "region".len()..];
    }
    None
}

/// Candidates for one expression: the proposals, plus the ground truth
/// when no proposal reaches IoU 0.5 with it. Boxes are `[x1, y1, x2, y2]`.
pub fn candidates_with_ground_truth(
    proposals: &[[f64; 4]],
    ground_truth: [f64; 4],
) -> Vec<[f64; 4]> {
    let mut candidates = proposals.to_vec();
    if !proposals
        .iter()
        .any(|p| box_iou_xyxy(*p, ground_truth) >= 0.5)
    {
        candidates.push(ground_truth);
    }
    candidates
}

/// Whether `answer` picks a candidate with IoU >= 0.5 with `ground_truth`.
pub fn rec_correct(answer: &str, candidates: &[[f64; 4]], ground_truth: [f64; 4]) -> bool {
    parse_region_index(answer)
        .and_then(|k| k.checked_sub(1))
        .and_then(|i| candidates.get(i))
        .is_some_and(|chosen| box_iou_xyxy(*chosen, ground_truth) >= 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_indices_parse_tolerantly() {
        assert_eq!(parse_region_index("Region [2]."), Some(2));
        assert_eq!(parse_region_index("region[12]"), Some(12));
        assert_eq!(parse_region_index("It is REGION [ 3 ] I think"), Some(3));
        assert_eq!(
            parse_region_index("The region on the left, Region [1]."),
            Some(1)
        );
        assert_eq!(parse_region_index("No corresponding options found."), None);
        assert_eq!(parse_region_index("Region [x]."), None);
        assert_eq!(parse_region_index("Region 2"), None);
    }

    #[test]
    fn correctness_needs_iou_half_with_the_chosen_candidate() {
        let gt = [0.0, 0.0, 10.0, 10.0];
        let candidates = [[50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 8.0]];
        assert!(rec_correct("Region [2].", &candidates, gt));
        assert!(!rec_correct("Region [1].", &candidates, gt));
        assert!(!rec_correct("Region [3].", &candidates, gt));
        assert!(!rec_correct("Region [0].", &candidates, gt));
        assert!(!rec_correct("the second one", &candidates, gt));
        // A proposal set that misses the object gains the ground truth.
        let missed = candidates_with_ground_truth(&candidates[..1], gt);
        assert_eq!(missed, vec![candidates[0], gt]);
        assert_eq!(candidates_with_ground_truth(&candidates, gt).len(), 2);
    }
}
