//! Which metric family a task belongs to, from the task's name.

/// Which metric family a sample's `task` belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// Closed-set region classification (`coco-cls`, `v3det-cls`,
    /// `synth-shape`, `synth-color`).
    Classification,
    /// Referring expressions answered `Region [k].` (`refcocog-rec`, `synth-rec`).
    Rec,
    /// Region or image captions (`refcocog-cap`, `vg`, `synth-caption`, ...).
    Caption,
    /// POPE yes/no object-existence questions.
    Pope,
}

impl TaskKind {
    pub fn of(task: &str) -> Option<TaskKind> {
        if task.ends_with("-cls") || task == "synth-shape" || task == "synth-color" {
            Some(TaskKind::Classification)
        } else if task.ends_with("-rec") {
            Some(TaskKind::Rec)
        } else if task.ends_with("-cap") || task.ends_with("caption") || task == "vg" {
            Some(TaskKind::Caption)
        } else if task.contains("pope") {
            Some(TaskKind::Pope)
        } else {
            None
        }
    }
}
