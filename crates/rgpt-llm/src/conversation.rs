//! Conversation templates. `vicuna_v1` reproduces LLaVA's `conv_vicuna_v1`
//! (llava/conversation.py, `SeparatorStyle.TWO`): the system prompt, then
//! `USER: ... ASSISTANT: ...</s>` turns separated by a space, and a bare
//! `ASSISTANT:` where the model is to answer. `raw` passes text through.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    VicunaV1,
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

const VICUNA_V1_SYSTEM: &str =
    "A chat between a curious user and an artificial intelligence assistant. \
The assistant gives helpful, detailed, and polite answers to the user's questions.";

impl Template {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "vicuna_v1" => Some(Template::VicunaV1),
            "raw" => Some(Template::Raw),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Template::VicunaV1 => "vicuna_v1",
            Template::Raw => "raw",
        }
    }
}

/// A conversation to render into a prompt; a turn without a message is the
/// one the model is asked to write.
#[derive(Debug, Clone)]
pub struct Conversation {
    template: Template,
    turns: Vec<(Role, Option<String>)>,
}

impl Conversation {
    pub fn new(template: Template) -> Self {
        Conversation {
            template,
            turns: Vec::new(),
        }
    }

    /// The usual single question awaiting an answer.
    pub fn single_turn(template: Template, question: &str) -> Self {
        let mut conv = Conversation::new(template);
        conv.push(Role::User, Some(question.to_string()));
        conv.push(Role::Assistant, None);
        conv
    }

    pub fn push(&mut self, role: Role, message: Option<String>) {
        self.turns.push((role, message));
    }

    pub fn prompt(&self) -> String {
        match self.template {
            Template::Raw => self
                .turns
                .iter()
                .filter_map(|(_, m)| m.as_deref())
                .collect(),
            Template::VicunaV1 => {
                let mut out = format!("{VICUNA_V1_SYSTEM} ");
                for (role, message) in &self.turns {
                    let (name, sep) = match role {
                        Role::User => ("USER", " "),
                        Role::Assistant => ("ASSISTANT", "</s>"),
                    };
                    match message {
                        Some(m) => {
                            out.push_str(name);
                            out.push_str(": ");
                            out.push_str(m);
                            out.push_str(sep);
                        }
                        None => {
                            out.push_str(name);
                            out.push(':');
                        }
                    }
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vicuna_v1_matches_llava_conv_vicuna_v1() {
        // llava.conversation.conv_vicuna_v1 with ["USER", "What is this?"],
        // ["ASSISTANT", "A cat."], ["USER", "And this?"], ["ASSISTANT", None].
        let mut conv = Conversation::new(Template::VicunaV1);
        conv.push(Role::User, Some("What is this?".into()));
        conv.push(Role::Assistant, Some("A cat.".into()));
        conv.push(Role::User, Some("And this?".into()));
        conv.push(Role::Assistant, None);
        assert_eq!(
            conv.prompt(),
            "A chat between a curious user and an artificial intelligence assistant. The assistant \
             gives helpful, detailed, and polite answers to the user's questions. USER: What is this? \
             ASSISTANT: A cat.</s>USER: And this? ASSISTANT:"
        );
    }

    #[test]
    fn raw_passes_text_through() {
        assert_eq!(
            Conversation::single_turn(Template::Raw, "Once upon").prompt(),
            "Once upon"
        );
    }
}
