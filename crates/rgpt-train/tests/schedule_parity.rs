//! The learning-rate schedules against transformers' own, at every step of
//! each case in tests/fixtures/lr_schedules (scripts/fixtures/lr_schedules.py:
//! `get_cosine_schedule_with_warmup` and `get_constant_schedule_with_warmup`
//! with `ceil(total * warmup_ratio)` warm-up steps, as `TrainingArguments`
//! gives them). Relative tolerance 1e-12: the two compute the same formula
//! with the multiplications in another order.
use rgpt_train::schedule::Schedule;

#[derive(serde::Deserialize)]
struct Case {
    schedule: Schedule,
    total: u64,
    warmup_ratio: f64,
    base_lr: f64,
    lr: Vec<f64>,
}

#[derive(serde::Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[test]
fn every_step_matches_transformers_schedulers() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/lr_schedules/expected.json"
    );
    let fixture: Fixture = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(fixture.cases.len(), 14);
    for case in &fixture.cases {
        assert_eq!(case.lr.len() as u64, case.total, "one rate per step");
        for (step, &want) in case.lr.iter().enumerate() {
            let got = case
                .schedule
                .lr(case.base_lr, step as u64, case.total, case.warmup_ratio);
            let scale = want.abs().max(case.base_lr * 1e-9);
            assert!(
                (got - want).abs() <= 1e-12 * scale,
                "{:?} {} steps, warm-up {}: step {step}: {got} vs transformers {want}",
                case.schedule,
                case.total,
                case.warmup_ratio
            );
        }
    }
}
